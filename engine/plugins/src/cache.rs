//! The compile cache: each component is compiled once into wasmtime's
//! serialised form and kept in a folder (`[plugin_runtime] cache_dir`), so a
//! start or a reload loads native code instead of compiling again (the
//! Python filter takes seconds to compile, a Rust one tens of milliseconds).
//!
//! # The key
//!
//! An entry is valid for exactly one component and one engine: the sha256 of
//! the component's bytes, the wasmtime version, and the engine settings that
//! shape the code (`Engine::precompile_compatibility_hash`: target, compiler
//! flags, tunables such as the memory reservation, wasm features; it covers
//! the wasmtime version too). The file is named after the key,
//! `<component sha256>-<engine key, 16 hex>.cwasm`, so engines with other
//! settings sharing the folder keep entries of their own.
//!
//! # An entry
//!
//! A [`HEADER_LEN`]-byte header, then the artefact (`Component::serialize`):
//!
//! | bytes | field |
//! |---|---|
//! | 0..8 | [`MAGIC`] (`FWPLUGC` and the format version) |
//! | 8..40 | sha256 of the component's bytes |
//! | 40..72 | engine key: sha256 of the compatibility hash |
//! | 72..88 | wasmtime version, ASCII, NUL-padded |
//! | 88..120 | sha256 of the artefact |
//! | 120..128 | artefact length, u64 little-endian |
//!
//! Every field is checked before the artefact reaches
//! `Component::deserialize`: a truncated, bit-flipped or foreign file, or
//! one written for other bytes, another wasmtime or other settings, is
//! refused (`fanwire_plugin_cache_total{result="corrupt"}`), the component is
//! compiled again and the entry rewritten. Entries are written to a
//! temporary file in the same folder and renamed into place, so processes
//! sharing the folder never see half a file. A failed write is logged and
//! counted (`write_error`); the plugin still loads.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use sha2::{Digest, Sha256};
use wasmtime::component::Component;
use wasmtime::Engine;

use crate::metrics::{CacheResult, PluginMetrics};
use crate::LoadError;

/// The first bytes of an entry: `FWPLUGC` and the format version.
pub const MAGIC: &[u8; 8] = b"FWPLUGC\x01";

/// The size of an entry's header.
pub const HEADER_LEN: usize = 128;

/// The wasmtime this crate is built with: pinned with `=` in Cargo.toml and
/// checked against Cargo.lock by a unit test.
pub const WASMTIME_VERSION: &str = "48.0.8";

type Sha = [u8; 32];

fn sha256(bytes: &[u8]) -> Sha {
    Sha256::digest(bytes).into()
}

/// Feeds a `Hash` value into sha256: `DefaultHasher` is only 64 bits and
/// its algorithm may change between Rust releases.
struct ShaHasher(Sha256);

impl std::hash::Hasher for ShaHasher {
    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }

    fn finish(&self) -> u64 {
        // `Hash` implementations only write; the digest is read from `self.0`.
        0
    }
}

/// The engine part of the key: what makes compiled code fit an engine.
fn engine_key(engine: &Engine) -> Sha {
    use std::hash::Hash;
    let mut hasher = ShaHasher(Sha256::new());
    WASMTIME_VERSION.hash(&mut hasher);
    engine.precompile_compatibility_hash().hash(&mut hasher);
    hasher.0.finalize().into()
}

/// An entry's header.
#[derive(Debug, PartialEq, Eq)]
struct Header {
    component: Sha,
    engine: Sha,
    wasmtime: [u8; 16],
    artefact: Sha,
    len: u64,
}

impl Header {
    fn encode(&self) -> [u8; HEADER_LEN] {
        let mut out = [0u8; HEADER_LEN];
        out[0..8].copy_from_slice(MAGIC);
        out[8..40].copy_from_slice(&self.component);
        out[40..72].copy_from_slice(&self.engine);
        out[72..88].copy_from_slice(&self.wasmtime);
        out[88..120].copy_from_slice(&self.artefact);
        out[120..128].copy_from_slice(&self.len.to_le_bytes());
        out
    }

    /// `None` unless `bytes` starts with [`MAGIC`] and a whole header.
    fn decode(bytes: &[u8]) -> Option<Header> {
        let h = bytes.get(..HEADER_LEN)?;
        if &h[0..8] != MAGIC {
            return None;
        }
        Some(Header {
            component: h[8..40].try_into().ok()?,
            engine: h[40..72].try_into().ok()?,
            wasmtime: h[72..88].try_into().ok()?,
            artefact: h[88..120].try_into().ok()?,
            len: u64::from_le_bytes(h[120..128].try_into().ok()?),
        })
    }
}

fn version_field() -> [u8; 16] {
    let mut out = [0u8; 16];
    out[..WASMTIME_VERSION.len()].copy_from_slice(WASMTIME_VERSION.as_bytes());
    out
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Returns the artefact of `file` if every header field matches `key` and
/// the artefact is whole and unaltered; else why not.
fn verify<'a>(file: &'a [u8], component: &Sha, engine: &Sha) -> Result<&'a [u8], String> {
    let header = Header::decode(file).ok_or_else(|| {
        if file.len() < HEADER_LEN {
            format!("truncated: {} bytes, shorter than the header", file.len())
        } else {
            "not a cache entry of this format".to_owned()
        }
    })?;
    if &header.component != component {
        return Err(format!(
            "written for other component bytes (sha256 {})",
            hex(&header.component)
        ));
    }
    if header.wasmtime != version_field() {
        let theirs = String::from_utf8_lossy(&header.wasmtime);
        return Err(format!(
            "written by wasmtime {}, this is {WASMTIME_VERSION}",
            theirs.trim_end_matches('\0')
        ));
    }
    if &header.engine != engine {
        return Err("written for other engine settings".to_owned());
    }
    let artefact = &file[HEADER_LEN..];
    if artefact.len() as u64 != header.len {
        return Err(format!(
            "truncated or padded: {} artefact bytes, the header says {}",
            artefact.len(),
            header.len
        ));
    }
    if sha256(artefact) != header.artefact {
        return Err("the artefact's sha256 does not match its header (corrupt)".to_owned());
    }
    Ok(artefact)
}

/// What a look in the folder found.
enum Lookup {
    Hit(Component),
    Miss,
    Rejected(String),
}

/// Compiled components in a folder, for one engine.
#[derive(Debug)]
pub(crate) struct CompileCache {
    dir: PathBuf,
    engine: Sha,
}

impl CompileCache {
    /// A cache in `dir` (created on the first write) for `engine`.
    pub fn new(dir: PathBuf, engine: &Engine) -> CompileCache {
        CompileCache {
            dir,
            engine: engine_key(engine),
        }
    }

    /// The folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The component for `bytes`: from the cache when a verified entry is
    /// there, else compiled (and stored). Counts one of hit, miss or
    /// corrupt per call for `plugin`, plus write_error when storing fails.
    pub fn component(
        &self,
        engine: &Engine,
        bytes: &[u8],
        plugin: &str,
        metrics: &PluginMetrics,
    ) -> Result<Component, LoadError> {
        let component_key = sha256(bytes);
        let path = self.dir.join(format!(
            "{}-{}.cwasm",
            hex(&component_key),
            hex(&self.engine[..8])
        ));
        match self.lookup(engine, &path, &component_key) {
            Lookup::Hit(component) => {
                metrics.cache(plugin, CacheResult::Hit);
                return Ok(component);
            }
            Lookup::Miss => metrics.cache(plugin, CacheResult::Miss),
            Lookup::Rejected(why) => {
                tracing::warn!(plugin, entry = %path.display(), reason = %why, "plugin compile cache entry refused: compiling again");
                metrics.cache(plugin, CacheResult::Corrupt);
            }
        }
        let component =
            Component::new(engine, bytes).map_err(|e| LoadError::Compile(format!("{e:#}")))?;
        if let Err(e) = self.store(&path, &component_key, &component) {
            tracing::warn!(plugin, dir = %self.dir.display(), error = %e, "cannot write the plugin compile cache: the plugin loads, and compiles again next time");
            metrics.cache(plugin, CacheResult::WriteError);
        }
        Ok(component)
    }

    fn lookup(&self, engine: &Engine, path: &Path, component: &Sha) -> Lookup {
        let file = match fs::read(path) {
            Ok(file) => file,
            Err(e) => {
                // An entry that cannot be read is as good as absent (the
                // write that follows will likely fail too, and say why).
                if !matches!(
                    e.kind(),
                    io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
                ) {
                    tracing::warn!(entry = %path.display(), error = %e, "cannot read a plugin compile cache entry: compiling");
                }
                return Lookup::Miss;
            }
        };
        let artefact = match verify(&file, component, &self.engine) {
            Ok(artefact) => artefact,
            Err(why) => return Lookup::Rejected(why),
        };
        // SAFETY: `deserialize` trusts its input to be wasmtime's own output
        // for a compatible engine, because it maps the code as executable
        // without validating it. `artefact` is the exact, whole byte string
        // this cache wrote after `Component::serialize` of the component
        // whose sha256 is in the header: `verify` checked the magic, the
        // component hash, the wasmtime version, the engine key and the
        // artefact's length and sha256, and we hold the bytes it checked in
        // memory (no file is mapped, so no later write can change them).
        // wasmtime then checks its own version and engine settings again.
        // What this cannot stop is a writer that forges entries: the folder
        // is created private (0700), and, like the plugin folder and the
        // binary, must not be writable by anyone the host does not trust.
        match unsafe { Component::deserialize(engine, artefact) } {
            Ok(component) => Lookup::Hit(component),
            Err(e) => Lookup::Rejected(format!("wasmtime refused it: {e:#}")),
        }
    }

    /// Writes the entry for `component` atomically: a temporary file in the
    /// same folder, renamed over `path`.
    fn store(&self, path: &Path, key: &Sha, component: &Component) -> io::Result<()> {
        let artefact = component.serialize().map_err(io::Error::other)?;
        create_private_dir(&self.dir)?;
        let header = Header {
            component: *key,
            engine: self.engine,
            wasmtime: version_field(),
            artefact: sha256(&artefact),
            len: artefact.len() as u64,
        };
        static TEMP: AtomicU64 = AtomicU64::new(0);
        let temp = self.dir.join(format!(
            ".{}.{}-{}.tmp",
            path.file_name().unwrap_or_default().to_string_lossy(),
            std::process::id(),
            TEMP.fetch_add(1, Ordering::Relaxed)
        ));
        // No fsync: an entry torn by a crash fails verification and is
        // compiled again, which is all an fsync would have saved.
        let written = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&temp)
            .and_then(|mut f| {
                f.write_all(&header.encode())?;
                f.write_all(&artefact)
            })
            .and_then(|()| fs::rename(&temp, path));
        if written.is_err() {
            let _ = fs::remove_file(&temp);
        }
        written
    }
}

/// Creates `dir` (and missing parents) readable and writable by this user
/// only: entries are native code that the host will run.
fn create_private_dir(dir: &Path) -> io::Result<()> {
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir)
}

/// The default cache folder: `$XDG_CACHE_HOME/fanwire/plugins`, else
/// `$HOME/.cache/fanwire/plugins`; `None` when neither is set.
pub fn default_dir() -> Option<PathBuf> {
    let xdg = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        // The XDG spec: a relative path is invalid and ignored.
        .filter(|p| p.is_absolute());
    let home = || {
        std::env::var_os("HOME")
            .filter(|h| !h.is_empty())
            .map(|h| PathBuf::from(h).join(".cache"))
    };
    xdg.or_else(home).map(|c| c.join("fanwire").join("plugins"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header() -> Header {
        Header {
            component: [1; 32],
            engine: [2; 32],
            wasmtime: version_field(),
            artefact: sha256(b"code"),
            len: 4,
        }
    }

    #[test]
    fn a_header_reads_back_and_checks_every_field() {
        let h = header();
        let mut file = h.encode().to_vec();
        file.extend_from_slice(b"code");
        assert_eq!(Header::decode(&file), Some(header()));
        assert_eq!(verify(&file, &[1; 32], &[2; 32]), Ok(&b"code"[..]));
        assert!(verify(&file, &[9; 32], &[2; 32])
            .unwrap_err()
            .contains("other component"));
        assert!(verify(&file, &[1; 32], &[9; 32])
            .unwrap_err()
            .contains("engine settings"));
        assert!(verify(&file[..HEADER_LEN + 2], &[1; 32], &[2; 32])
            .unwrap_err()
            .contains("truncated"));
        assert!(verify(&file[..10], &[1; 32], &[2; 32])
            .unwrap_err()
            .contains("shorter than the header"));
        let mut flipped = file.clone();
        flipped[HEADER_LEN + 1] ^= 1;
        assert!(verify(&flipped, &[1; 32], &[2; 32])
            .unwrap_err()
            .contains("sha256"));
        let mut other = file.clone();
        other[72..88].copy_from_slice(b"47.0.0\0\0\0\0\0\0\0\0\0\0");
        assert_eq!(
            verify(&other, &[1; 32], &[2; 32]).unwrap_err(),
            format!("written by wasmtime 47.0.0, this is {WASMTIME_VERSION}")
        );
        let mut foreign = file;
        foreign[0] = b'X';
        assert!(verify(&foreign, &[1; 32], &[2; 32])
            .unwrap_err()
            .contains("not a cache entry"));
    }

    #[test]
    fn the_version_constant_is_the_locked_wasmtime() {
        let lock =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../Cargo.lock"))
                .unwrap();
        let entry = format!("name = \"wasmtime\"\nversion = \"{WASMTIME_VERSION}\"\n");
        assert!(
            lock.contains(&entry),
            "Cargo.lock has another wasmtime: update cache::WASMTIME_VERSION"
        );
    }
}
