//! argon2id password hashes whose working memory goes back to the operating system afterwards.
//!
//! argon2id with Warden's parameters (m = 19,456 KiB) fills 19 MiB of blocks per hash. Through
//! `argon2`'s own `hash_password`/`verify_password` that memory is an ordinary heap
//! allocation, which mimalloc (and glibc, once its mmap threshold has risen) keeps resident
//! for reuse: a process stayed 19–20 MiB larger after a login until an idle pool thread exited
//! (`docs/performance.md`, "Memory at start and after a login"). Here the blocks live in a
//! buffer whose *capacity* is above every allocator's arena limit, so the allocation is the
//! operating system's own mapping, unmapped when the buffer drops. Only the blocks argon2 uses
//! are written, so only they are ever resident. The parameters are the PHC string's (or
//! argon2's defaults when hashing): nothing is weakened.

use argon2::password_hash::{Output, PasswordHash, SaltString};
use argon2::{Algorithm, Argon2, Block, Params, Version};

/// Address space reserved for the blocks: above mimalloc's largest arena object (2 GiB on
/// 64-bit; larger allocations are mapped from the OS and unmapped at free)
/// and glibc's largest mmap threshold (32 MiB). Untouched pages cost no memory.
const RESERVE_BYTES: usize = (2 << 30) + (4 << 20);

/// argon2's working memory, `blocks` long, in a mapping of its own where the system allows
/// one. If the address space cannot be reserved (a strict overcommit policy, a `ulimit -v`),
/// an exact-size buffer instead: the hash is the same, only its memory may stay resident.
fn blocks(blocks: usize) -> Vec<Block> {
    let mut v: Vec<Block> = Vec::new();
    let reserve = (RESERVE_BYTES / Block::SIZE).max(blocks);
    if v.try_reserve_exact(reserve).is_err() {
        v = Vec::with_capacity(blocks);
    }
    v.resize(blocks, Block::new());
    v
}

/// `argon2.hash_password_into` with [`blocks`] as its memory.
fn hash_into(
    argon2: &Argon2<'_>,
    params: &Params,
    pwd: &[u8],
    salt: &[u8],
    out: &mut [u8],
) -> argon2::Result<()> {
    let mut memory = blocks(params.block_count());
    argon2.hash_password_into_with_memory(pwd, salt, out, &mut memory[..])
}

/// Hash `plain` as an argon2id PHC string with argon2's default parameters and `salt`.
pub(super) fn hash(plain: &str, salt: &SaltString) -> Result<String, String> {
    let params = Params::default();
    let argon2 = Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone());
    let mut salt_bytes = [0u8; 64];
    let salt_raw = salt
        .decode_b64(&mut salt_bytes)
        .map_err(|e| format!("salt: {e}"))?;
    let len = params.output_len().unwrap_or(Params::DEFAULT_OUTPUT_LEN);
    let output = Output::init_with(len, |out| {
        hash_into(&argon2, &params, plain.as_bytes(), salt_raw, out)
            .map_err(argon2::password_hash::Error::from)
    })
    .map_err(|e| format!("argon2: {e}"))?;
    let phc = PasswordHash {
        algorithm: Algorithm::Argon2id.ident(),
        version: Some(Version::V0x13.into()),
        params: (&params).try_into().map_err(|e| format!("argon2: {e}"))?,
        salt: Some(salt.as_salt()),
        hash: Some(output),
    };
    Ok(phc.to_string())
}

/// Check `plain` against a PHC string with the string's own algorithm, version and parameters,
/// as `PasswordVerifier::verify_password` does; [`Output`]'s comparison is constant-time.
pub(super) fn verify(plain: &str, phc: &str) -> bool {
    let Ok(h) = PasswordHash::new(phc) else {
        return false;
    };
    let (Some(salt), Some(expected)) = (h.salt, h.hash) else {
        return false;
    };
    let Ok(algorithm) = Algorithm::try_from(h.algorithm) else {
        return false;
    };
    let version = match h.version.map(Version::try_from).transpose() {
        Ok(v) => v.unwrap_or_default(),
        Err(_) => return false,
    };
    let Ok(params) = Params::try_from(&h) else {
        return false;
    };
    let mut salt_bytes = [0u8; 64];
    let Ok(salt_raw) = salt.decode_b64(&mut salt_bytes) else {
        return false;
    };
    let argon2 = Argon2::new(algorithm, version, params.clone());
    let computed = Output::init_with(expected.len(), |out| {
        hash_into(&argon2, &params, plain.as_bytes(), salt_raw, out)
            .map_err(argon2::password_hash::Error::from)
    });
    matches!(computed, Ok(c) if c == expected)
}

#[cfg(test)]
#[path = "password_tests.rs"]
mod tests;
