//! Walking a read table by keyset while it lags behind one's own appends (ADR 0010). The
//! dispatcher walks due runs by `(next_due_at, run_id)`, the sweeper inactive carts by
//! `(last_activity_at, cart_id)`. Each scan goes on after the last row of the previous full
//! scan, and leaves alone the rows the table shows older than this process's own last append
//! to them. Without this, during a burst each scan met again the rows it had just handled,
//! whose aggregates then refused the command.

use std::collections::HashMap;
use std::sync::Mutex;

use chrono::{DateTime, Utc};

/// A keyset position: the ordering time and the id that breaks ties.
pub(crate) type Key = (DateTime<Utc>, String);

pub(crate) struct KeysetWalk {
    /// Where the next scan goes on; `None` starts from the oldest.
    cursor: Mutex<Option<Key>>,
    /// The position of this process's last append to each row it acted on lately.
    written: Mutex<HashMap<String, i64>>,
    /// Rows remembered at most; past it the memory starts afresh (a stale row then costs one
    /// refused command, as it would without the memory).
    capacity: usize,
}

impl KeysetWalk {
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            cursor: Mutex::new(None),
            written: Mutex::new(HashMap::new()),
            capacity,
        }
    }

    /// Where the next scan starts.
    pub(crate) fn after(&self) -> Option<Key> {
        self.cursor.lock().expect("keyset cursor").clone()
    }

    /// After a scan: a full one goes on after its last row (`last`); a short one reached the
    /// end of what is due, so the next starts again from the oldest.
    pub(crate) fn scanned(&self, full: bool, last: Option<Key>) {
        *self.cursor.lock().expect("keyset cursor") = if full { last } else { None };
    }

    /// Drops the rows whose table position (`position_of`) is older than this process's own
    /// last append to them, and forgets the rows the table has caught up with.
    pub(crate) fn keep_fresh<T>(&self, rows: &mut Vec<T>, position_of: impl Fn(&T) -> (&str, i64)) {
        let mut written = self.written.lock().expect("keyset memory");
        rows.retain(|row| {
            let (id, position) = position_of(row);
            match written.get(id) {
                Some(&mine) if position < mine => false,
                Some(_) => {
                    written.remove(id);
                    true
                }
                None => true,
            }
        });
    }

    /// Remembers the position of this process's last append to row `id`.
    pub(crate) fn wrote(&self, id: &str, position: Option<i64>) {
        let Some(position) = position else { return };
        let mut written = self.written.lock().expect("keyset memory");
        if written.len() >= self.capacity {
            written.clear();
        }
        written.insert(id.to_owned(), position);
    }
}
