//! PostgreSQL as the seed design uses it: seats are rows of `slot_availabilities`
//! (the seed's columns exactly), a lock is the seed's optimistic
//! `UPDATE ... WHERE status = 'available' RETURNING id` inside a transaction that
//! commits only when every requested seat was updated, and a confirm marks the seats
//! `booked` and inserts a `bookings` row in one transaction. Durability is whatever
//! the server runs with; the script starts it with `fsync=on` and
//! `synchronous_commit=on`, and `describe` reports what the server says.
//!
//! Deviations from the seed, all needed to run it: an index on
//! `(show_id, seat_no)` (the seed names none; without it every lock scans the table),
//! and `bookings.user_id` is a `BIGINT` without the foreign keys to tables this
//! benchmark does not fill (users, theaters).

use super::{LockOutcome, Target};
use crate::scenario::{ReadKind, ScenarioSpec};
use tokio_postgres::{Client, NoTls, Statement};

const SCHEMA: &str = "
DROP TABLE IF EXISTS bookings, slot_availabilities, shows_availabilities, shows CASCADE;
CREATE TABLE shows (
  id UUID PRIMARY KEY,
  name TEXT NOT NULL,
  description TEXT,
  rating FLOAT,
  images TEXT[],
  isActive BOOLEAN DEFAULT TRUE,
  start_time TIME NOT NULL,
  end_time TIME NOT NULL,
  start_date DATE NOT NULL,
  end_date DATE NOT NULL,
  weekdaysAvailabilities TEXT[],
  theater_id UUID
);
CREATE TABLE shows_availabilities (
  id UUID PRIMARY KEY,
  show_id UUID REFERENCES shows(id),
  start_time TIME NOT NULL,
  end_time TIME NOT NULL,
  start_date DATE NOT NULL,
  end_date DATE NOT NULL,
  weekdaysAvailabilities TEXT[],
  availableSeats INT,
  bookedSeats INT
);
CREATE TABLE slot_availabilities (
  id UUID PRIMARY KEY,
  show_id UUID REFERENCES shows(id),
  show_availability_id UUID REFERENCES shows_availabilities(id),
  seat_no VARCHAR,
  row VARCHAR,
  status TEXT CHECK (status IN ('available', 'booked', 'locked')),
  type TEXT CHECK (type IN ('premium', 'vip', 'normal')),
  version INT DEFAULT 0
);
CREATE INDEX slot_availabilities_show_seat ON slot_availabilities (show_id, seat_no);
CREATE TABLE bookings (
  booking_id UUID PRIMARY KEY,
  user_id BIGINT,
  theater_id UUID,
  show_id UUID REFERENCES shows(id),
  slot_ids UUID[],
  total_price DECIMAL,
  created_at TIMESTAMP DEFAULT now()
);
";

const LOCK: &str = "UPDATE slot_availabilities SET status = 'locked', version = version + 1 \
     WHERE show_id = ($1::text)::uuid AND seat_no = ANY($2::text[]) AND status = 'available' \
     RETURNING id::text";
const BOOK: &str = "UPDATE slot_availabilities SET status = 'booked', version = version + 1 \
     WHERE id = ANY(($1::text[])::uuid[]) AND status = 'locked' RETURNING id";
const INSERT_BOOKING: &str =
    "INSERT INTO bookings (booking_id, user_id, show_id, slot_ids, total_price) \
     VALUES (gen_random_uuid(), $1::bigint, ($2::text)::uuid, ($3::text[])::uuid[], $4::bigint)";
const SEAT_MAP: &str = "SELECT id::text, seat_no, row, status, type FROM slot_availabilities \
     WHERE show_id = ($1::text)::uuid";

/// PostgreSQL at `url` (a tokio-postgres connection string).
pub struct Postgres {
    url: String,
    /// Server version and durability settings, read at start.
    description: String,
    /// Kept for setup statements.
    admin: Client,
}

/// One client's connection and its prepared statements.
pub struct PgSession {
    client: Client,
    lock: Statement,
    book: Statement,
    insert_booking: Statement,
    seat_map: Statement,
}

/// A show's id (UUID text).
pub type PgShow = String;

/// The locked seats' row ids and the show they belong to.
#[derive(Debug)]
pub struct PgLock {
    show: String,
    slot_ids: Vec<String>,
}

async fn connect(url: &str) -> Result<Client, String> {
    let (client, connection) = tokio_postgres::connect(url, NoTls)
        .await
        .map_err(|e| format!("connect to PostgreSQL ({url}): {e}"))?;
    tokio::spawn(async move {
        if let Err(error) = connection.await {
            tracing::debug!(%error, "PostgreSQL connection ended");
        }
    });
    Ok(client)
}

async fn setting(client: &Client, query: &str) -> Result<String, String> {
    let row = client
        .query_one(query, &[])
        .await
        .map_err(|e| format!("{query}: {e}"))?;
    row.try_get::<_, String>(0)
        .map_err(|e| format!("{query}: {e}"))
}

impl Postgres {
    pub async fn connect(url: &str) -> Result<Postgres, String> {
        let admin = connect(url).await?;
        let version = setting(&admin, "SHOW server_version").await?;
        let fsync = setting(&admin, "SHOW fsync").await?;
        let synchronous_commit = setting(&admin, "SHOW synchronous_commit").await?;
        let wal_sync_method = setting(&admin, "SHOW wal_sync_method").await?;
        let description = format!(
            "PostgreSQL {version}, one node, fsync={fsync}, synchronous_commit={synchronous_commit}, \
             wal_sync_method={wal_sync_method}; seed schema, optimistic UPDATE ... WHERE status = \
             'available' RETURNING id"
        );
        Ok(Postgres {
            url: url.into(),
            description,
            admin,
        })
    }
}

fn error(context: &str, e: tokio_postgres::Error) -> String {
    format!("{context}: {e}")
}

impl Target for Postgres {
    type Session = PgSession;
    type Show = PgShow;
    type Lock = PgLock;

    fn describe(&self) -> String {
        self.description.clone()
    }

    async fn prepare(
        &self,
        spec: &ScenarioSpec,
        shows_per_city: usize,
    ) -> Result<Vec<Vec<PgShow>>, String> {
        self.admin
            .batch_execute(SCHEMA)
            .await
            .map_err(|e| error("create the seed schema", e))?;
        let seats = i64::from(spec.seats_per_show());
        let per_row = i64::from(spec.seats_per_row);
        let mut cities = Vec::new();
        for _ in 0..spec.cities {
            let mut shows = Vec::new();
            for _ in 0..shows_per_city {
                let row = self
                    .admin
                    .query_one(
                        "INSERT INTO shows (id, name, start_time, end_time, start_date, end_date) \
                         VALUES (gen_random_uuid(), 'Loadgen', '18:00', '19:00', \
                         current_date + 1, current_date + 1) RETURNING id::text",
                        &[],
                    )
                    .await
                    .map_err(|e| error("insert a show", e))?;
                let show: String = row.try_get(0).map_err(|e| error("show id", e))?;
                self.admin
                    .execute(
                        "INSERT INTO slot_availabilities (id, show_id, seat_no, row, status, type) \
                         SELECT gen_random_uuid(), ($1::text)::uuid, s::text, 'R' || (s / $2::bigint)::text, \
                         'available', 'normal' FROM generate_series(0, $3::bigint - 1) AS s",
                        &[&show, &per_row, &seats],
                    )
                    .await
                    .map_err(|e| error("insert the seats", e))?;
                shows.push(show);
            }
            cities.push(shows);
        }
        self.admin
            .batch_execute("ANALYZE slot_availabilities; CHECKPOINT;")
            .await
            .map_err(|e| error("analyze", e))?;
        Ok(cities)
    }

    async fn session(&self, _index: usize) -> Result<PgSession, String> {
        let client = connect(&self.url).await?;
        let prepare = |sql: &'static str| {
            let client = &client;
            async move { client.prepare(sql).await.map_err(|e| error(sql, e)) }
        };
        let lock = prepare(LOCK).await?;
        let book = prepare(BOOK).await?;
        let insert_booking = prepare(INSERT_BOOKING).await?;
        let seat_map = prepare(SEAT_MAP).await?;
        Ok(PgSession {
            client,
            lock,
            book,
            insert_booking,
            seat_map,
        })
    }

    async fn lock(
        &self,
        session: &mut PgSession,
        show: &PgShow,
        seats: &[u32],
        _user: u64,
    ) -> Result<LockOutcome<PgLock>, String> {
        let seat_numbers: Vec<String> = seats.iter().map(u32::to_string).collect();
        let transaction = session
            .client
            .transaction()
            .await
            .map_err(|e| error("begin", e))?;
        let rows = transaction
            .query(&session.lock, &[show, &seat_numbers])
            .await
            .map_err(|e| error("lock update", e))?;
        if rows.len() != seats.len() {
            transaction
                .rollback()
                .await
                .map_err(|e| error("rollback", e))?;
            return Ok(LockOutcome::Taken);
        }
        let slot_ids = rows
            .iter()
            .map(|row| row.try_get::<_, String>(0))
            .collect::<Result<Vec<String>, _>>()
            .map_err(|e| error("slot id", e))?;
        transaction.commit().await.map_err(|e| error("commit", e))?;
        Ok(LockOutcome::Locked(PgLock {
            show: show.clone(),
            slot_ids,
        }))
    }

    async fn confirm(
        &self,
        session: &mut PgSession,
        lock: PgLock,
        user: u64,
    ) -> Result<(), String> {
        let user = i64::try_from(user).map_err(|_| format!("user {user} does not fit BIGINT"))?;
        let price = 100 * lock.slot_ids.len() as i64;
        let transaction = session
            .client
            .transaction()
            .await
            .map_err(|e| error("begin", e))?;
        let booked = transaction
            .query(&session.book, &[&lock.slot_ids])
            .await
            .map_err(|e| error("book update", e))?;
        if booked.len() != lock.slot_ids.len() {
            transaction
                .rollback()
                .await
                .map_err(|e| error("rollback", e))?;
            return Err(format!(
                "confirm found {} of {} seats still locked",
                booked.len(),
                lock.slot_ids.len()
            ));
        }
        transaction
            .execute(
                &session.insert_booking,
                &[&user, &lock.show, &lock.slot_ids, &price],
            )
            .await
            .map_err(|e| error("insert booking", e))?;
        transaction.commit().await.map_err(|e| error("commit", e))
    }

    async fn read(
        &self,
        session: &mut PgSession,
        show: &PgShow,
        _kind: ReadKind,
    ) -> Result<usize, String> {
        // One node: every read is linearizable, and there is no cheaper stale read.
        let rows = session
            .client
            .query(&session.seat_map, &[show])
            .await
            .map_err(|e| error("seat map", e))?;
        Ok(rows.len())
    }

    async fn close(self) {}
}
