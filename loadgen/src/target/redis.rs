//! Redis as the seed design's lock cache: a seat lock is `SET seat:{show}:{seat} {user}
//! NX EX 300` per seat (pipelined; on a partial success the seats this request got are
//! deleted again), a confirm is `SET ... XX` without expiry, and a seat map is an
//! `MGET` of the show's seat keys. Its figures are labelled: not durable (the script
//! starts it without RDB or AOF persistence) and not replicated.

use super::{LockOutcome, Target};
use crate::scenario::{ReadKind, ScenarioSpec};
use redis::aio::MultiplexedConnection;

/// Lock time to live, as the product design's five minutes.
const LOCK_TTL_S: u64 = 300;

/// Redis at `url` (`redis://host:port/`).
pub struct Redis {
    client: redis::Client,
    description: String,
    admin: MultiplexedConnection,
}

/// A show: its number and seat count.
#[derive(Clone, Debug)]
pub struct RedisShow {
    number: u64,
    seats: u32,
}

/// The keys a lock holds.
#[derive(Debug)]
pub struct RedisLock {
    keys: Vec<String>,
}

fn seat_key(show: u64, seat: u32) -> String {
    format!("seat:{show}:{seat}")
}

fn error(context: &str, e: redis::RedisError) -> String {
    format!("{context}: {e}")
}

impl Redis {
    pub async fn connect(url: &str) -> Result<Redis, String> {
        let client = redis::Client::open(url).map_err(|e| error(url, e))?;
        let mut admin = client
            .get_multiplexed_async_connection()
            .await
            .map_err(|e| error("connect to Redis", e))?;
        let info: String = redis::cmd("INFO")
            .arg("server")
            .query_async(&mut admin)
            .await
            .map_err(|e| error("INFO", e))?;
        let field = |name: &str| {
            info.lines()
                .find_map(|line| line.strip_prefix(&format!("{name}:")))
                .unwrap_or("?")
                .trim()
                .to_owned()
        };
        let (server, version) = match field("valkey_version").as_str() {
            "?" => ("Redis", field("redis_version")),
            valkey => ("Valkey", valkey.to_owned()),
        };
        let appendonly: Vec<String> = redis::cmd("CONFIG")
            .arg("GET")
            .arg("appendonly")
            .query_async(&mut admin)
            .await
            .map_err(|e| error("CONFIG GET appendonly", e))?;
        let save: Vec<String> = redis::cmd("CONFIG")
            .arg("GET")
            .arg("save")
            .query_async(&mut admin)
            .await
            .map_err(|e| error("CONFIG GET save", e))?;
        let description = format!(
            "{server} {version}, one node, appendonly={}, save={:?}; SET key NX EX per seat. \
             NOT durable, NOT replicated",
            appendonly.get(1).map_or("?", String::as_str),
            save.get(1).map_or("?", String::as_str),
        );
        Ok(Redis {
            client,
            description,
            admin,
        })
    }
}

impl Target for Redis {
    type Session = MultiplexedConnection;
    type Show = RedisShow;
    type Lock = RedisLock;

    const SHOWS_ARE_FREE: bool = true;

    fn describe(&self) -> String {
        self.description.clone()
    }

    async fn prepare(
        &self,
        spec: &ScenarioSpec,
        shows_per_city: usize,
    ) -> Result<Vec<Vec<RedisShow>>, String> {
        let mut admin = self.admin.clone();
        redis::cmd("FLUSHALL")
            .query_async::<()>(&mut admin)
            .await
            .map_err(|e| error("FLUSHALL", e))?;
        // A seat without a key is available: shows need no rows, only distinct numbers.
        let seats = spec.seats_per_show();
        Ok((0..spec.cities)
            .map(|city| {
                (0..shows_per_city)
                    .map(|n| RedisShow {
                        number: (city * shows_per_city + n) as u64,
                        seats,
                    })
                    .collect()
            })
            .collect())
    }

    async fn session(&self, _index: usize) -> Result<MultiplexedConnection, String> {
        self.client
            .get_multiplexed_async_connection()
            .await
            .map_err(|e| error("connect to Redis", e))
    }

    async fn lock(
        &self,
        session: &mut MultiplexedConnection,
        show: &RedisShow,
        seats: &[u32],
        user: u64,
    ) -> Result<LockOutcome<RedisLock>, String> {
        let keys: Vec<String> = seats.iter().map(|s| seat_key(show.number, *s)).collect();
        let mut pipe = redis::pipe();
        for key in &keys {
            pipe.cmd("SET")
                .arg(key)
                .arg(user)
                .arg("NX")
                .arg("EX")
                .arg(LOCK_TTL_S);
        }
        let answers: Vec<Option<String>> = pipe
            .query_async(session)
            .await
            .map_err(|e| error("SET NX", e))?;
        if answers.iter().all(Option::is_some) {
            return Ok(LockOutcome::Locked(RedisLock { keys }));
        }
        let got: Vec<&String> = keys
            .iter()
            .zip(&answers)
            .filter(|(_, answer)| answer.is_some())
            .map(|(key, _)| key)
            .collect();
        if !got.is_empty() {
            redis::cmd("DEL")
                .arg(got)
                .query_async::<()>(session)
                .await
                .map_err(|e| error("DEL after a partial lock", e))?;
        }
        Ok(LockOutcome::Taken)
    }

    async fn confirm(
        &self,
        session: &mut MultiplexedConnection,
        lock: RedisLock,
        user: u64,
    ) -> Result<(), String> {
        let mut pipe = redis::pipe();
        let value = format!("booked:{user}");
        for key in &lock.keys {
            pipe.cmd("SET").arg(key).arg(&value).arg("XX");
        }
        let answers: Vec<Option<String>> = pipe
            .query_async(session)
            .await
            .map_err(|e| error("SET XX", e))?;
        if answers.iter().all(Option::is_some) {
            Ok(())
        } else {
            Err("confirm found an expired lock".into())
        }
    }

    async fn read(
        &self,
        session: &mut MultiplexedConnection,
        show: &RedisShow,
        _kind: ReadKind,
    ) -> Result<usize, String> {
        // One node: every read is as fresh as it gets; stale and linearizable are alike.
        let keys: Vec<String> = (0..show.seats).map(|s| seat_key(show.number, s)).collect();
        let values: Vec<Option<String>> = redis::cmd("MGET")
            .arg(keys)
            .query_async(session)
            .await
            .map_err(|e| error("MGET", e))?;
        Ok(values.len())
    }

    async fn close(self) {}
}
