//! Counting the connections the simulator holds to its backend, from `/proc/self/fd`
//! (Linux): the file descriptors opened since a [`Mark`] that are sockets (PostgreSQL,
//! MariaDB, memcached, a relay) or database files (SQLite: one per connection; its
//! `-wal`, `-shm` and `-journal` companions are not counted). Elsewhere the count is
//! absent.

use std::collections::HashSet;

/// The descriptors open at one moment: (fd number, link target).
#[derive(Debug, Clone, Default)]
pub struct Mark(Option<HashSet<(String, String)>>);

fn open_fds() -> Option<HashSet<(String, String)>> {
    let dir = std::fs::read_dir("/proc/self/fd").ok()?;
    Some(
        dir.flatten()
            .filter_map(|entry| {
                let target = std::fs::read_link(entry.path()).ok()?;
                Some((
                    entry.file_name().to_string_lossy().into_owned(),
                    target.to_string_lossy().into_owned(),
                ))
            })
            .collect(),
    )
}

/// Whether a descriptor's link target is a connection to a backend.
fn is_connection(target: &str) -> bool {
    if target.starts_with("socket:") {
        return true;
    }
    target.starts_with('/')
        && !target.ends_with(" (deleted)")
        && !["-wal", "-shm", "-journal"]
            .iter()
            .any(|suffix| target.ends_with(suffix))
        && !target.starts_with("/dev/")
        && !target.starts_with("/proc/")
}

/// The descriptors open now.
pub fn mark() -> Mark {
    Mark(open_fds())
}

/// Connections opened since `mark` and still open.
pub fn since(mark: &Mark) -> Option<u64> {
    let before = mark.0.as_ref()?;
    let now = open_fds()?;
    Some(
        now.iter()
            .filter(|fd| !before.contains(*fd) && is_connection(&fd.1))
            .count() as u64,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sockets_and_database_files_count_companions_do_not() {
        assert!(is_connection("socket:[123456]"));
        assert!(is_connection("/tmp/x/servicegroup.db"));
        assert!(!is_connection("/tmp/x/servicegroup.db-wal"));
        assert!(!is_connection("/tmp/x/servicegroup.db-shm"));
        assert!(!is_connection("anon_inode:[eventpoll]"));
        assert!(!is_connection("pipe:[42]"));
        assert!(!is_connection("/dev/null"));
    }

    #[test]
    fn counts_what_was_opened_since_the_mark() {
        let m = mark();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.db");
        let file = std::fs::File::create(&path).unwrap();
        let wal = std::fs::File::create(dir.path().join("a.db-wal")).unwrap();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        assert_eq!(since(&m), Some(2));
        drop((file, wal, listener));
        assert_eq!(since(&m), Some(0));
    }
}
