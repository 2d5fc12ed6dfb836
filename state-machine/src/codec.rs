//! The one binary encoding of the crate (bincode 2, standard config, with a size limit
//! on decode so hostile bytes cannot make us allocate without bound).

use serde::{de::DeserializeOwned, Serialize};

/// Largest single value we will decode: a snapshot of a large shard fits, a forged
/// length prefix of many gigabytes does not.
pub const DECODE_BYTES_MAX: usize = 1 << 30;

pub fn encode<T: Serialize + ?Sized>(value: &T) -> Vec<u8> {
    // Encoding into a Vec fails only for types serde cannot describe with a known
    // length; none of the ledger's types is such, so a failure is a bug, not input.
    bincode::serde::encode_to_vec(value, bincode::config::standard())
        .expect("bincode encodes every ledger type")
}

/// Decodes a value that must use up all of `bytes`.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
    let config = bincode::config::standard().with_limit::<DECODE_BYTES_MAX>();
    let (value, used) =
        bincode::serde::decode_from_slice(bytes, config).map_err(|error| error.to_string())?;
    if used != bytes.len() {
        return Err(format!(
            "{} trailing bytes after the value",
            bytes.len() - used
        ));
    }
    Ok(value)
}
