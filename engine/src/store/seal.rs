//! At rest: zstd compression and XChaCha20-Poly1305 encryption of every
//! object a volume stores, chosen when the volume is formatted and recorded
//! in its marker ([`AtRestSpec`]), so every host agrees.
//!
//! A sealed object is a codec frame of kind `Sealed` whose payload is:
//!
//! ```text
//! offset  size  field
//! 0       1     flags: 1 compressed (zstd), 2 encrypted
//! 1       24    nonce, random per object (encrypted only)
//! ..            body: the inner bytes, encrypted with a 16-byte tag
//!               when flag 2 is set
//! inner = compressed ? plain length (u32 LE) + zstd frame : plain bytes
//! ```
//!
//! The plain bytes are the object exactly as a plain volume stores it, with
//! its own checksum, which the reader checks as usual after unsealing. The
//! encryption binds the object's store path and the flags (associated
//! data): a blob copied under another name, or a plain object planted in an
//! encrypted volume, does not open. The volume marker itself stays plain
//! (it says how to open the rest); so do a segment's index sidecar (frame
//! offsets, which the sizes of the objects show anyway) and lock files.

use crate::codec::{self, Kind};
use crate::error::{Error, Result};
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use serde::{Deserialize, Serialize};

const COMPRESSED: u8 = 1;
const ENCRYPTED: u8 = 2;
const NONCE: usize = 24;
/// Objects smaller than this are stored uncompressed: zstd's frame costs
/// more than it can save.
const COMPRESS_FROM: usize = 64;
/// Where the marker's key check is bound (no object lives there).
const CHECK_PATH: &str = "volume#key-check";
const CHECK_TEXT: &[u8] = b"sopfs volume key";
/// Shortest key accepted, in bytes.
pub const MIN_KEY_LEN: usize = 16;

/// A volume's key: the bytes of a key file, or of an environment variable.
/// It is stretched with Argon2id and the volume's salt, so a passphrase
/// works; a random key (`head -c 32 /dev/urandom | base64`) is better. Never
/// printed: its `Debug` shows nothing of it, and it is wiped when dropped.
#[derive(Clone)]
pub struct Secret(zeroize::Zeroizing<Vec<u8>>);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

impl Secret {
    /// Takes key bytes; trailing whitespace (the newline of a key file) is
    /// not part of the key. Fewer than [`MIN_KEY_LEN`] bytes are refused.
    pub fn new(mut bytes: Vec<u8>) -> Result<Secret> {
        while bytes.last().is_some_and(|b| b.is_ascii_whitespace()) {
            bytes.pop();
        }
        let secret = Secret(zeroize::Zeroizing::new(bytes));
        if secret.0.len() < MIN_KEY_LEN {
            return Err(Error::Key(format!(
                "a key needs at least {MIN_KEY_LEN} bytes (this one has {})",
                secret.0.len()
            )));
        }
        Ok(secret)
    }

    /// Reads a key file.
    pub fn from_file(path: &std::path::Path) -> Result<Secret> {
        let bytes = std::fs::read(path).map_err(|source| Error::Io {
            path: path.display().to_string(),
            source,
        })?;
        Secret::new(bytes).map_err(|e| Error::Key(format!("{}: {e}", path.display())))
    }
}

/// How a volume is stored at rest, as its marker records it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct AtRestSpec {
    /// zstd level of every object worth compressing; None: none.
    pub zstd_level: Option<i32>,
    /// Present when the volume is encrypted.
    pub cipher: Option<CipherSpec>,
}

/// The encryption of a volume: XChaCha20-Poly1305 under a key stretched
/// from the user's with Argon2id (its default cost) and `salt`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct CipherSpec {
    pub salt: [u8; 16],
    /// A short text sealed under the key: a wrong key fails to open it,
    /// so the mount fails at once with one line instead of on every read.
    pub check: Vec<u8>,
}

/// Seals and unseals objects of one volume.
pub(crate) struct Sealer {
    level: Option<i32>,
    cipher: Option<XChaCha20Poly1305>,
}

fn derive(secret: &Secret, salt: &[u8; 16]) -> Result<XChaCha20Poly1305> {
    let mut key = zeroize::Zeroizing::new([0u8; 32]);
    argon2::Argon2::default()
        .hash_password_into(&secret.0, salt, &mut key[..])
        .map_err(|e| Error::Key(format!("cannot derive the volume key: {e}")))?;
    XChaCha20Poly1305::new_from_slice(&key[..])
        .map_err(|_| Error::Key("cannot derive the volume key".into()))
}

impl Sealer {
    /// The sealer and marker spec of a volume formatted now with
    /// `compression` (a zstd level) and `key`; None when neither is asked for.
    pub fn for_format(
        compression: Option<i32>,
        key: Option<&Secret>,
    ) -> Result<Option<(Sealer, AtRestSpec)>> {
        if let Some(level) = compression {
            if !(1..=19).contains(&level) {
                return Err(Error::InvalidArgument(format!(
                    "zstd level {level}: choose 1 to 19"
                )));
            }
        }
        if compression.is_none() && key.is_none() {
            return Ok(None);
        }
        let mut sealer = Sealer {
            level: compression,
            cipher: None,
        };
        let mut spec = AtRestSpec {
            zstd_level: compression,
            cipher: None,
        };
        if let Some(key) = key {
            let salt: [u8; 16] = rand::random();
            let only_cipher = Sealer {
                level: None,
                cipher: Some(derive(key, &salt)?),
            };
            let check = only_cipher.seal(CHECK_PATH, CHECK_TEXT);
            sealer.cipher = only_cipher.cipher;
            spec.cipher = Some(CipherSpec { salt, check });
        }
        Ok(Some((sealer, spec)))
    }

    /// The sealer of an existing volume whose marker says `spec` (None:
    /// plain objects); see [`Sealer::for_open`].
    pub fn for_volume(
        spec: Option<&AtRestSpec>,
        key: Option<&Secret>,
        volume: &str,
    ) -> Result<Option<Sealer>> {
        const PLAIN: AtRestSpec = AtRestSpec {
            zstd_level: None,
            cipher: None,
        };
        let sealer = Sealer::for_open(spec.unwrap_or(&PLAIN), key, volume)?;
        Ok(spec.map(|_| sealer))
    }

    /// The sealer of an existing volume of spec `spec`; `volume` names it
    /// in errors. An encrypted volume needs its key, and a wrong key is
    /// refused here; a key for a volume that is not encrypted is refused
    /// too (whoever gave it believes the data is encrypted).
    pub fn for_open(spec: &AtRestSpec, key: Option<&Secret>, volume: &str) -> Result<Sealer> {
        let cipher = match (&spec.cipher, key) {
            (None, None) => None,
            (None, Some(_)) => {
                return Err(Error::Key(format!(
                    "{volume}: the volume is not encrypted, but a key was given \
                     (format a new volume with the key to encrypt)"
                )))
            }
            (Some(_), None) => {
                return Err(Error::Key(format!(
                    "{volume}: the volume is encrypted; give its key \
                     (-o key_file=PATH, or SOPFS_KEY_FILE / SOPFS_KEY)"
                )))
            }
            (Some(c), Some(key)) => {
                let sealer = Sealer {
                    level: None,
                    cipher: Some(derive(key, &c.salt)?),
                };
                if sealer.unseal(CHECK_PATH, &c.check).ok().as_deref() != Some(CHECK_TEXT) {
                    return Err(Error::Key(format!(
                        "{volume}: the key does not open this volume"
                    )));
                }
                sealer.cipher
            }
        };
        Ok(Sealer {
            level: spec.zstd_level,
            cipher,
        })
    }

    /// True when objects are encrypted.
    pub fn encrypts(&self) -> bool {
        self.cipher.is_some()
    }

    /// The zstd level objects are compressed with.
    pub fn level(&self) -> Option<i32> {
        self.level
    }

    /// The stored form of `plain`, to live at `path`.
    pub fn seal(&self, path: &str, plain: &[u8]) -> Vec<u8> {
        let mut flags = 0;
        let mut inner = None;
        if let Some(level) = self.level.filter(|_| plain.len() >= COMPRESS_FROM) {
            if let Ok(z) = compress(plain, level) {
                // Kept only where it saves at least 1/32 of the object.
                if z.len() + 4 < plain.len() - plain.len() / 32 {
                    let mut v = Vec::with_capacity(4 + z.len());
                    v.extend_from_slice(&(plain.len() as u32).to_le_bytes());
                    v.extend_from_slice(&z);
                    inner = Some(v);
                    flags |= COMPRESSED;
                }
            }
        }
        let inner: &[u8] = inner.as_deref().unwrap_or(plain);
        let mut payload = Vec::with_capacity(1 + NONCE + inner.len() + 16);
        match &self.cipher {
            Some(cipher) => {
                flags |= ENCRYPTED;
                let nonce: [u8; NONCE] = rand::random();
                let aad = associated(path, flags);
                // Encrypting into a Vec cannot run out of room: this never fails.
                let Ok(body) = cipher.encrypt(
                    &XNonce::from(nonce),
                    Payload {
                        msg: inner,
                        aad: &aad,
                    },
                ) else {
                    return codec::frame(Kind::Sealed, &[]);
                };
                payload.push(flags);
                payload.extend_from_slice(&nonce);
                payload.extend_from_slice(&body);
            }
            None => {
                payload.push(flags);
                payload.extend_from_slice(inner);
            }
        }
        codec::frame(Kind::Sealed, &payload)
    }

    /// The plain bytes of the object stored at `path` as `stored`.
    pub fn unseal(&self, path: &str, stored: &[u8]) -> Result<Vec<u8>> {
        let bad = |detail: &str| Error::Corrupted {
            what: "sealed object",
            path: path.to_string(),
            detail: detail.to_string(),
        };
        let payload = codec::unframe(Kind::Sealed, path, stored)?;
        let Some((&flags, rest)) = payload.split_first() else {
            return Err(bad("empty"));
        };
        let decrypted;
        let inner = match (&self.cipher, flags & ENCRYPTED != 0) {
            (Some(cipher), true) => {
                if rest.len() < NONCE {
                    return Err(bad("truncated nonce"));
                }
                let (nonce, body) = rest.split_at(NONCE);
                let mut n = [0u8; NONCE];
                n.copy_from_slice(nonce);
                let aad = associated(path, flags);
                decrypted = cipher
                    .decrypt(
                        &XNonce::from(n),
                        Payload {
                            msg: body,
                            aad: &aad,
                        },
                    )
                    .map_err(|_| bad("does not decrypt: damaged, moved, or another key's"))?;
                &decrypted[..]
            }
            (Some(_), false) => return Err(bad("not encrypted, in an encrypted volume")),
            (None, true) => return Err(bad("encrypted, in a volume without a key")),
            (None, false) => rest,
        };
        if flags & COMPRESSED == 0 {
            return Ok(inner.to_vec());
        }
        let Some((len, z)) = inner.split_first_chunk::<4>() else {
            return Err(bad("truncated length"));
        };
        let len = u32::from_le_bytes(*len) as usize;
        let plain = decompress(z, len).map_err(|e| bad(&format!("does not decompress: {e}")))?;
        if plain.len() != len {
            return Err(bad("decompressed length differs"));
        }
        Ok(plain)
    }
}

/// One line saying how a volume is stored at rest (`sopfs status`).
pub fn at_rest_summary(compression: Option<i32>, encrypted: bool) -> String {
    let z = match compression {
        Some(level) => format!("zstd level {level}"),
        None => "not compressed".into(),
    };
    let e = if encrypted {
        "encrypted (XChaCha20-Poly1305, Argon2id key)"
    } else {
        "not encrypted"
    };
    format!("{z}, {e}")
}

thread_local! {
    // A zstd context costs more to set up than a small object does to
    // compress (a commit record): each thread keeps one of each.
    static COMPRESSOR: std::cell::RefCell<Option<(i32, zstd::bulk::Compressor<'static>)>> =
        const { std::cell::RefCell::new(None) };
    static DECOMPRESSOR: std::cell::RefCell<Option<zstd::bulk::Decompressor<'static>>> =
        const { std::cell::RefCell::new(None) };
}

fn compress(plain: &[u8], level: i32) -> std::io::Result<Vec<u8>> {
    COMPRESSOR.with(|c| {
        let mut c = c.borrow_mut();
        if c.as_ref().is_none_or(|(l, _)| *l != level) {
            *c = Some((level, zstd::bulk::Compressor::new(level)?));
        }
        match c.as_mut() {
            Some((_, z)) => z.compress(plain),
            None => zstd::bulk::compress(plain, level),
        }
    })
}

fn decompress(z: &[u8], len: usize) -> std::io::Result<Vec<u8>> {
    DECOMPRESSOR.with(|d| {
        let mut d = d.borrow_mut();
        if d.is_none() {
            *d = Some(zstd::bulk::Decompressor::new()?);
        }
        match d.as_mut() {
            Some(z2) => z2.decompress(z, len),
            None => zstd::bulk::decompress(z, len),
        }
    })
}

fn associated(path: &str, flags: u8) -> Vec<u8> {
    let mut aad = Vec::with_capacity(path.len() + 1);
    aad.extend_from_slice(path.as_bytes());
    aad.push(flags);
    aad
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(s: &str) -> Secret {
        Secret::new(s.as_bytes().to_vec()).expect("key")
    }

    #[test]
    fn round_trips_and_refuses_what_is_not_its_own() {
        let k = key("a long enough passphrase\n");
        let (sealer, spec) = Sealer::for_format(Some(3), Some(&k))
            .expect("format")
            .expect("sealing");
        let text = b"hello hello hello hello hello hello hello hello hello hello hello!".repeat(20);
        let stored = sealer.seal("blobs/ab/1", &text);
        assert!(
            stored.len() < text.len() / 4,
            "compressed: {}",
            stored.len()
        );
        assert!(!stored.windows(5).any(|w| w == b"hello"), "encrypted");
        assert_eq!(sealer.unseal("blobs/ab/1", &stored).expect("open"), text);
        // Bound to its path.
        assert!(sealer.unseal("blobs/ab/2", &stored).is_err());
        // Every flipped bit is caught.
        for i in 0..stored.len() {
            let mut bad = stored.clone();
            bad[i] ^= 0x10;
            assert!(sealer.unseal("blobs/ab/1", &bad).is_err(), "flip at {i}");
        }
        // The same key opens it again; another key, or none, does not.
        let again = Sealer::for_open(&spec, Some(&k), "v").expect("reopen");
        assert_eq!(again.unseal("blobs/ab/1", &stored).expect("open"), text);
        let e = Sealer::for_open(&spec, Some(&key("another passphrase!")), "v")
            .err()
            .expect("wrong key");
        assert!(e.to_string().contains("does not open"), "{e}");
        assert!(Sealer::for_open(&spec, None, "v").is_err());
        // A plain object planted in an encrypted volume is refused.
        let plain_only = Sealer::for_open(
            &AtRestSpec {
                zstd_level: Some(3),
                cipher: None,
            },
            None,
            "v",
        )
        .expect("plain");
        let planted = plain_only.seal("blobs/ab/1", &text);
        assert!(sealer.unseal("blobs/ab/1", &planted).is_err());
        assert_eq!(plain_only.unseal("blobs/ab/1", &planted).expect("z"), text);
    }

    #[test]
    fn incompressible_and_small_objects_are_stored_as_they_are() {
        let (sealer, _) = Sealer::for_format(Some(3), None)
            .expect("format")
            .expect("sealing");
        let noise: Vec<u8> = (0..10_000).map(|_| rand::random::<u8>()).collect();
        let stored = sealer.seal("p", &noise);
        assert_eq!(
            stored[10], 0,
            "flags (after the frame header): not compressed"
        );
        assert!(stored.len() <= noise.len() + 15);
        assert_eq!(sealer.unseal("p", &stored).expect("open"), noise);
        let small = sealer.seal("p", b"tiny");
        assert_eq!(sealer.unseal("p", &small).expect("open"), b"tiny");
    }

    #[test]
    fn bad_settings_are_refused() {
        assert!(Sealer::for_format(Some(0), None).is_err());
        assert!(Sealer::for_format(Some(23), None).is_err());
        assert!(Sealer::for_format(None, None).expect("ok").is_none());
        assert!(Secret::new(b"short\n".to_vec()).is_err());
        let spec = AtRestSpec {
            zstd_level: None,
            cipher: None,
        };
        assert!(Sealer::for_open(&spec, Some(&key("0123456789abcdef")), "v").is_err());
        assert_eq!(format!("{:?}", key("0123456789abcdef")), "Secret(..)");
    }
}
