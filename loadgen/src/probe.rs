//! The machine's own costs, measured before the runs: the latency of an fsync'd 4 KiB
//! append in the data directory and of a 64-byte loopback TCP round trip. The issue
//! states its single-client lock target in these units (3 fsyncs + 2 round trips).

use crate::histogram::Latency;
use crate::report::Baseline;
use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Samples taken before measuring, to settle caches and connections.
const WARMUP_SAMPLES: usize = 10;

/// Appends and `sync_data`s 4 KiB `samples` times in a file under `dir`.
pub fn fsync_latency(dir: &Path, samples: usize) -> Result<Latency, String> {
    let path = dir.join(format!("loadgen-fsync-probe-{}", std::process::id()));
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .map_err(|e| format!("open {}: {e}", path.display()))?;
    let block = vec![0x5a_u8; 4096];
    let mut latency = Latency::new();
    let mut result = Ok(());
    for n in 0..samples + WARMUP_SAMPLES {
        let started = Instant::now();
        if let Err(e) = file.write_all(&block).and_then(|()| file.sync_data()) {
            result = Err(format!("append and sync {}: {e}", path.display()));
            break;
        }
        if n >= WARMUP_SAMPLES {
            latency.record(started.elapsed());
        }
    }
    drop(file);
    let _ = std::fs::remove_file(&path);
    result.map(|()| latency)
}

/// Echoes 64 bytes over one loopback connection (no Nagle) `samples` times.
pub async fn loopback_rtt(samples: usize) -> Result<Latency, String> {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| format!("bind loopback: {e}"))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let echo = tokio::spawn(async move {
        let Ok((mut stream, _)) = listener.accept().await else {
            return;
        };
        let _ = stream.set_nodelay(true);
        let mut buffer = [0u8; 64];
        while stream.read_exact(&mut buffer).await.is_ok() {
            if stream.write_all(&buffer).await.is_err() {
                break;
            }
        }
    });
    let mut stream = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect to the echo: {e}"))?;
    stream.set_nodelay(true).map_err(|e| e.to_string())?;
    let message = [7u8; 64];
    let mut answer = [0u8; 64];
    let mut latency = Latency::new();
    for n in 0..samples + WARMUP_SAMPLES {
        let started = Instant::now();
        let round = async {
            stream.write_all(&message).await?;
            stream.read_exact(&mut answer).await.map(|_| ())
        };
        tokio::time::timeout(Duration::from_secs(5), round)
            .await
            .map_err(|_| "loopback echo timed out".to_string())?
            .map_err(|e| format!("loopback echo: {e}"))?;
        if n >= WARMUP_SAMPLES {
            latency.record(started.elapsed());
        }
    }
    drop(stream);
    echo.abort();
    Ok(latency)
}

/// Both probes, with the load average at the time.
pub async fn baseline(dir: &Path) -> Result<Baseline, String> {
    let dir = dir.to_path_buf();
    let fsync = tokio::task::spawn_blocking(move || fsync_latency(&dir, 200))
        .await
        .map_err(|e| format!("fsync probe: {e}"))??;
    let rtt = loopback_rtt(1_000).await?;
    Ok(Baseline {
        fsync_p50_us: fsync.quantile_us(0.5),
        fsync_p99_us: fsync.quantile_us(0.99),
        loopback_rtt_p50_us: rtt.quantile_us(0.5),
        loopback_rtt_p99_us: rtt.quantile_us(0.99),
        load_average: load_average(),
    })
}

/// The first three fields of `/proc/loadavg`, or "unknown".
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|text| {
            text.split_whitespace()
                .take(3)
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_else(|_| "unknown".into())
}
