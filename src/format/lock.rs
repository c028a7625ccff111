//! Lock files (`locks/<id>`): who is using the repository, and how.
//!
//! Sealed payload: time (i64 s) ‖ exclusive (u8: 0 or 1) ‖ pid (u32) ‖ host (bytes) ‖
//! user (bytes) ‖ command (bytes).

use super::wire::{DecodeResult, Reader, Writer};

#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct LockInfo {
    /// When the lock was written (or last refreshed), seconds since the epoch.
    pub time: i64,
    pub exclusive: bool,
    pub pid: u32,
    pub host: String,
    pub user: String,
    pub command: String,
}

const MAX_STRING: usize = 4096;

impl LockInfo {
    pub fn encode_body(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.i64(self.time);
        w.u8(self.exclusive as u8);
        w.u32(self.pid);
        w.str(&self.host);
        w.str(&self.user);
        w.str(&self.command);
        w.buf
    }

    pub fn decode_body(body: &[u8]) -> DecodeResult<LockInfo> {
        let mut r = Reader::new(body);
        let time = r.i64()?;
        let exclusive = match r.u8()? {
            0 => false,
            1 => true,
            other => return Err(format!("bad exclusive flag {other}")),
        };
        let info = LockInfo {
            time,
            exclusive,
            pid: r.u32()?,
            host: r.string(MAX_STRING, "host")?,
            user: r.string(MAX_STRING, "user")?,
            command: r.string(MAX_STRING, "command")?,
        };
        r.finish()?;
        Ok(info)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_round_trips() {
        let lock = LockInfo {
            time: 5,
            exclusive: true,
            pid: 42,
            host: "db1".into(),
            user: "root".into(),
            command: "prune".into(),
        };
        let body = lock.encode_body();
        assert_eq!(LockInfo::decode_body(&body).unwrap(), lock);
        for cut in 0..body.len() {
            assert!(LockInfo::decode_body(&body[..cut]).is_err());
        }
    }
}
