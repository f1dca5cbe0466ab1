//! What `wendy node` keeps on disk: its identity, the shared secret it is given, and the peers
//! it knew (to rejoin through them after a restart).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use wendy_proto::{Identity, NodeId};

use crate::Error;

/// The environment variable naming the secret file when `--secret-file` is not given.
pub const SECRET_ENV: &str = "WENDY_SECRET_FILE";

/// The shared secret from `path` (or the file `WENDY_SECRET_FILE` names): the file's contents
/// without the trailing newline. `None` if neither is given.
pub fn secret(path: Option<&Path>) -> Result<Option<Vec<u8>>, Error> {
    let path = match path {
        Some(p) => p.to_owned(),
        None => match std::env::var_os(SECRET_ENV) {
            Some(p) if !p.is_empty() => PathBuf::from(p),
            _ => return Ok(None),
        },
    };
    let mut text = std::fs::read(&path).map_err(|e| format!("cannot read the secret file {}: {e}", path.display()))?;
    while text.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
        text.pop();
    }
    if text.is_empty() {
        return Err(format!("the secret file {} is empty", path.display()).into());
    }
    Ok(Some(text))
}

/// The node's static key kept in `path` (its secret key as 64 hex digits; the node id is
/// derived from the public key); created with a fresh key from the OS on first start, readable
/// by its owner only.
pub fn identity(path: &Path) -> Result<(Identity, bool), Error> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok((parse_key(text.trim(), path)?, false)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let identity = wendy_driver::generate_identity()?;
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
            }
            let hex: String = identity.secret().iter().map(|b| format!("{b:02x}")).collect();
            write_private(path, format!("{hex}\n").as_bytes())
                .map_err(|e| format!("cannot write the identity file {}: {e}", path.display()))?;
            Ok((identity, true))
        }
        Err(e) => Err(format!("cannot read the identity file {}: {e}", path.display()).into()),
    }
}

fn parse_key(text: &str, path: &Path) -> Result<Identity, Error> {
    if text.len() == 32 && text.parse::<NodeId>().is_ok() {
        return Err(format!(
            "the identity file {} holds a node id from an older wendy; node ids are now derived from a key: \
             move the file away to create a key (the node's id changes)",
            path.display()
        )
        .into());
    }
    let bytes: Option<Vec<u8>> = (text.len() == 64 && text.is_ascii())
        .then(|| (0..32).map(|i| u8::from_str_radix(&text[2 * i..2 * i + 2], 16).ok()).collect())
        .flatten();
    let secret: [u8; 32] = bytes
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| format!("the identity file {} does not hold a key (64 hex digits)", path.display()))?;
    Ok(Identity::from_secret(secret))
}

#[cfg(unix)]
fn write_private(path: &Path, data: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path)?.write_all(data)
}

#[cfg(not(unix))]
fn write_private(path: &Path, data: &[u8]) -> std::io::Result<()> {
    std::fs::write(path, data)
}

/// The file in `dir` that lists the peers a node knew.
pub fn peers_file(dir: &Path) -> PathBuf {
    dir.join("peers")
}

/// The peers saved in `dir`, one address a line; none if there is no file yet.
pub fn load_peers(dir: &Path) -> Vec<SocketAddr> {
    std::fs::read_to_string(peers_file(dir))
        .map(|text| text.lines().filter_map(|l| l.trim().parse().ok()).collect())
        .unwrap_or_default()
}

/// Saves `peers` in `dir` (written to a temporary file, then renamed: never half a list).
pub fn save_peers(dir: &Path, peers: &[SocketAddr]) -> std::io::Result<()> {
    let text: String = peers.iter().map(|p| format!("{p}\n")).collect();
    let tmp = dir.join("peers.tmp");
    std::fs::write(&tmp, text)?;
    std::fs::rename(tmp, peers_file(dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_is_created_once_then_kept() {
        let dir = std::env::temp_dir().join(format!("wendy-identity-{}", std::process::id()));
        let path = dir.join("sub/identity");
        let (a, created) = identity(&path).unwrap();
        assert!(created);
        let (b, created) = identity(&path).unwrap();
        assert!(!created);
        assert_eq!(a, b);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        }
        std::fs::write(&path, "not a key").unwrap();
        assert!(identity(&path).unwrap_err().to_string().contains("does not hold a key"));
        std::fs::write(&path, format!("{}\n", a.node_id())).unwrap();
        assert!(identity(&path).unwrap_err().to_string().contains("older wendy"));
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn peers_round_trip() {
        let dir = std::env::temp_dir().join(format!("wendy-peers-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        assert!(load_peers(&dir).is_empty());
        let peers: Vec<SocketAddr> = vec!["127.0.0.2:7000".parse().unwrap(), "[::1]:7001".parse().unwrap()];
        save_peers(&dir, &peers).unwrap();
        assert_eq!(load_peers(&dir), peers);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn secret_without_its_newline() {
        let path = std::env::temp_dir().join(format!("wendy-secret-{}", std::process::id()));
        std::fs::write(&path, "s3cret\n").unwrap();
        assert_eq!(secret(Some(&path)).unwrap().unwrap(), b"s3cret");
        std::fs::write(&path, "\n").unwrap();
        assert!(secret(Some(&path)).is_err());
        std::fs::remove_file(path).unwrap();
    }
}
