//! Typed 32-byte identifiers, so a pack id can never be passed where a blob id is meant.

use std::fmt;
use std::str::FromStr;

use crate::error::{Error, Result};

/// Length in bytes of every identifier.
pub const ID_LEN: usize = 32;

macro_rules! typed_id {
    ($(#[$doc:meta])* $name:ident, $what:literal) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
        pub struct $name(pub [u8; ID_LEN]);

        impl $name {
            pub const WHAT: &'static str = $what;

            pub fn from_slice(bytes: &[u8]) -> Option<Self> {
                bytes.try_into().ok().map(Self)
            }

            pub fn as_bytes(&self) -> &[u8; ID_LEN] {
                &self.0
            }

            pub fn to_hex(&self) -> String {
                hex::encode(self.0)
            }

            /// The first eight hex digits, as shown in listings.
            pub fn short(&self) -> String {
                hex::encode(&self.0[..4])
            }

            /// The id of stored bytes: plain (unkeyed) BLAKE3, checkable without the key.
            pub fn of_stored_bytes(bytes: &[u8]) -> Self {
                Self(*blake3::hash(bytes).as_bytes())
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.to_hex())
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self.short())
            }
        }

        impl FromStr for $name {
            type Err = Error;

            fn from_str(s: &str) -> Result<Self> {
                let mut out = [0u8; ID_LEN];
                hex::decode_to_slice(s, &mut out)
                    .map_err(|_| Error::invalid(format!("{s:?} is not a {} id (64 hex digits)", $what)))?;
                Ok(Self(out))
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
                s.serialize_str(&self.to_hex())
            }
        }
    };
}

typed_id!(
    /// Keyed BLAKE3 of a blob's plaintext (a chunk of file data or an encoded tree).
    BlobId,
    "blob"
);
typed_id!(
    /// BLAKE3 of a pack file's stored bytes; also its file name.
    PackId,
    "pack"
);
typed_id!(
    /// BLAKE3 of an index segment's stored bytes; also its file name.
    IndexId,
    "index"
);
typed_id!(
    /// BLAKE3 of a snapshot file's stored bytes; also its file name.
    SnapshotId,
    "snapshot"
);
typed_id!(
    /// BLAKE3 of a key file's stored bytes; also its file name.
    KeyId,
    "key"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip_and_rejects_garbage() {
        let id = BlobId([7; 32]);
        assert_eq!(id.to_hex().parse::<BlobId>().unwrap(), id);
        assert_eq!(id.short(), "07070707");
        assert!("zz".parse::<BlobId>().is_err());
        assert!("0707".parse::<BlobId>().is_err());
    }
}
