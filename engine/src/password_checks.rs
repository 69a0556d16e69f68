//! Password checks (argon2id, ~19 MiB and ~20 ms each) on a fixed set of threads, one per
//! core. Checks beyond that wait in a queue instead of all running at once, and each
//! thread hashes into one memory buffer it keeps: nothing of 19 MiB is allocated per
//! check. (Checking through tokio's blocking pool with a fresh buffer each time cost
//! 3.1 GB in a login flood: glibc keeps freed buffers of that size in its heaps.)

use std::sync::mpsc;
use std::sync::{Arc, Mutex};

use argon2::password_hash::{Output, PasswordHash};
use argon2::{Algorithm, Argon2, Block, Params, Version};

struct Check {
    password: String,
    hash: String,
    answer: tokio::sync::oneshot::Sender<bool>,
}

pub struct PasswordChecks {
    queue: Mutex<mpsc::Sender<Check>>,
}

impl PasswordChecks {
    /// Starts `threads` checker threads; they end when this is dropped.
    pub fn start(threads: usize) -> PasswordChecks {
        let (sender, receiver) = mpsc::channel::<Check>();
        let receiver = Arc::new(Mutex::new(receiver));
        for i in 0..threads.max(1) {
            let receiver = receiver.clone();
            std::thread::Builder::new()
                .name(format!("usher-password-{i}"))
                .spawn(move || {
                    let mut memory: Vec<Block> = Vec::new();
                    loop {
                        let next = receiver.lock().expect("not poisoned").recv();
                        let Ok(check) = next else { return };
                        let _ = check.answer.send(verify(&check.password, &check.hash, &mut memory));
                    }
                })
                .expect("a thread for password checks");
        }
        PasswordChecks { queue: Mutex::new(sender) }
    }

    /// Whether `password` matches `hash`, checked on one of the pool's threads.
    pub async fn verify(&self, password: &str, hash: &str) -> bool {
        let (answer, result) = tokio::sync::oneshot::channel();
        let check = Check {
            password: password.to_string(),
            hash: hash.to_string(),
            answer,
        };
        if self.queue.lock().expect("not poisoned").send(check).is_err() {
            return false;
        }
        result.await.unwrap_or(false)
    }
}

/// Whether `password` matches the PHC string `hash` (argon2), hashing into `memory`
/// (grown once to the hash's memory cost, then reused). The comparison of the outputs is
/// constant-time (`Output`'s equality).
fn verify(password: &str, hash: &str, memory: &mut Vec<Block>) -> bool {
    let Ok(parsed) = PasswordHash::new(hash) else { return false };
    let (Some(expected), Some(salt)) = (parsed.hash, parsed.salt) else {
        return false;
    };
    let Ok(algorithm) = Algorithm::try_from(parsed.algorithm) else {
        return false;
    };
    let version = match parsed.version.map(Version::try_from).transpose() {
        Ok(v) => v.unwrap_or_default(),
        Err(_) => return false,
    };
    let Ok(params) = Params::try_from(&parsed) else { return false };
    let mut salt_bytes = [0u8; 64];
    let Ok(salt) = salt.decode_b64(&mut salt_bytes) else { return false };
    if memory.len() < params.block_count() {
        memory.resize(params.block_count(), Block::default());
    }
    let mut out = vec![0u8; expected.len()];
    let argon2 = Argon2::new(algorithm, version, params);
    if argon2
        .hash_password_into_with_memory(password.as_bytes(), salt, &mut out, &mut memory[..])
        .is_err()
    {
        return false;
    }
    Output::new(&out).is_ok_and(|actual| actual == expected)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verifies_exactly_what_the_hasher_made() {
        let hash = crate::auth::hash_password("correct horse").unwrap();
        let mut memory = Vec::new();
        assert!(verify("correct horse", &hash, &mut memory));
        assert!(!verify("correct hors", &hash, &mut memory));
        assert!(
            verify("correct horse", &hash, &mut memory),
            "the reused buffer gives the same answer"
        );
        assert!(!verify("x", "not a hash", &mut memory));
    }
}
