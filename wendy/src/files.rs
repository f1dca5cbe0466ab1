//! What `wendy node` keeps on disk: its identity, the shared secret it is given, and the peers
//! it knew (to rejoin through them after a restart).

use std::io::Read;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use wendy_proto::NodeId;

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

/// The node id kept in `path` (32 hex digits); created with a fresh random id on first start.
pub fn identity(path: &Path) -> Result<(NodeId, bool), Error> {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let id = text.trim().parse().map_err(|e| {
                format!("the identity file {} does not hold a node id (32 hex digits): {e}", path.display())
            })?;
            Ok((id, false))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let id = random_id()?;
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
            }
            std::fs::write(path, format!("{id}\n"))
                .map_err(|e| format!("cannot write the identity file {}: {e}", path.display()))?;
            Ok((id, true))
        }
        Err(e) => Err(format!("cannot read the identity file {}: {e}", path.display()).into()),
    }
}

/// A node id from the operating system's random source.
pub fn random_id() -> Result<NodeId, Error> {
    let mut bytes = [0u8; 16];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .map_err(|e| format!("cannot read /dev/urandom for a node id: {e}"))?;
    Ok(NodeId::from_bytes(&bytes)?)
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
        std::fs::write(&path, "not an id").unwrap();
        assert!(identity(&path).unwrap_err().to_string().contains("does not hold a node id"));
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
