//! The repository config (`config`): parameters every writer must agree on.
//!
//! Layout: file header (kind 2) ‖ sealed payload of: repository id (32) ‖ chunker min,
//! avg, max (3 × u32) ‖ pack target size (u32) ‖ zstd level (i32 as u32) ‖ created (i64).

use super::wire::{DecodeResult, Reader, Writer};
use crate::chunker::ChunkerParams;

#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct RepoConfig {
    #[serde(serialize_with = "hex_id")]
    pub repo_id: [u8; 32],
    pub chunker: ChunkerParams,
    pub pack_size: u32,
    pub compression_level: i32,
    pub created: i64,
}

fn hex_id<S: serde::Serializer>(id: &[u8; 32], s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&hex::encode(id))
}

/// Pack sizes accepted in a config: a hostile value must not make writers buffer gigabytes.
pub const PACK_SIZE_RANGE: std::ops::RangeInclusive<u32> = (1 << 20)..=(128 << 20);
pub const DEFAULT_PACK_SIZE: u32 = 16 << 20;
pub const DEFAULT_COMPRESSION_LEVEL: i32 = 3;

impl RepoConfig {
    pub fn encode_body(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.id(&self.repo_id);
        w.u32(self.chunker.min_size);
        w.u32(self.chunker.avg_size);
        w.u32(self.chunker.max_size);
        w.u32(self.pack_size);
        w.u32(self.compression_level as u32);
        w.i64(self.created);
        w.buf
    }

    pub fn decode_body(body: &[u8]) -> DecodeResult<RepoConfig> {
        let mut r = Reader::new(body);
        let config = RepoConfig {
            repo_id: r.id()?,
            chunker: ChunkerParams {
                min_size: r.u32()?,
                avg_size: r.u32()?,
                max_size: r.u32()?,
            },
            pack_size: r.u32()?,
            compression_level: r.u32()? as i32,
            created: r.i64()?,
        };
        r.finish()?;
        config.chunker.check().map_err(|e| e.to_string())?;
        if !PACK_SIZE_RANGE.contains(&config.pack_size) {
            return Err(format!("pack size {} is out of range", config.pack_size));
        }
        if !(-7..=22).contains(&config.compression_level) {
            return Err(format!(
                "compression level {} is out of range",
                config.compression_level
            ));
        }
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_round_trips_and_checks_bounds() {
        let config = RepoConfig {
            repo_id: [8; 32],
            chunker: ChunkerParams::DEFAULT,
            pack_size: DEFAULT_PACK_SIZE,
            compression_level: 3,
            created: 42,
        };
        let body = config.encode_body();
        assert_eq!(RepoConfig::decode_body(&body).unwrap(), config);
        let mut bad = config.clone();
        bad.pack_size = u32::MAX;
        assert!(RepoConfig::decode_body(&bad.encode_body()).is_err());
        assert!(RepoConfig::decode_body(&body[..body.len() - 1]).is_err());
    }
}
