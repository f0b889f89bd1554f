//! Which process holds the other end of a loopback TCP connection, so that a
//! function's Runtime API answers only the process `serve` started for it.
//!
//! On Linux the kernel lists every TCP socket in `/proc/net/tcp` with its inode,
//! and `/proc/PID/fd` links each of a process's sockets to `socket:[INODE]`: the
//! client socket of an accepted connection is the one whose local address is the
//! connection's peer and whose remote address is the listener. Another process of
//! the same user (one that read the address from `/proc/PID/environ`), or a web
//! page in the developer's browser, holds a socket of its own and is refused. On
//! other systems the check is not available and every peer is admitted (`serve`
//! says so once).

use std::net::{SocketAddr, SocketAddrV4};

/// The inode of the socket whose local address is `peer` and remote address is
/// `listener`, from the text of `/proc/net/tcp`.
pub fn socket_inode(tcp_table: &str, peer: SocketAddrV4, listener: SocketAddrV4) -> Option<u64> {
    let (peer, listener) = (proc_address(peer), proc_address(listener));
    tcp_table.lines().skip(1).find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        (fields.len() > 9 && fields[1].eq_ignore_ascii_case(&peer) && fields[2].eq_ignore_ascii_case(&listener))
            .then(|| fields[9].parse().ok())
            .flatten()
    })
}

/// An address as `/proc/net/tcp` prints it: the IPv4 address as the kernel holds
/// it in memory (network order read as a native integer), and the port.
fn proc_address(address: SocketAddrV4) -> String {
    format!("{:08X}:{:04X}", u32::from_ne_bytes(address.ip().octets()), address.port())
}

/// Whether the connection from `peer` to `listener` is held by process `pid`.
#[cfg(target_os = "linux")]
pub fn held_by(pid: u32, peer: SocketAddr, listener: SocketAddr) -> bool {
    let (SocketAddr::V4(peer), SocketAddr::V4(listener)) = (peer, listener) else { return false };
    let Ok(table) = std::fs::read_to_string("/proc/net/tcp") else { return false };
    let Some(inode) = socket_inode(&table, peer, listener) else { return false };
    let wanted = format!("socket:[{inode}]");
    let Ok(entries) = std::fs::read_dir(format!("/proc/{pid}/fd")) else { return false };
    entries
        .filter_map(Result::ok)
        .filter_map(|entry| std::fs::read_link(entry.path()).ok())
        .any(|target| target.as_os_str() == wanted.as_str())
}

/// Without `/proc`, every peer is admitted.
#[cfg(not(target_os = "linux"))]
pub fn held_by(_pid: u32, _peer: SocketAddr, _listener: SocketAddr) -> bool {
    static WARNED: std::sync::Once = std::sync::Once::new();
    WARNED.call_once(|| {
        tracing::warn!("this system cannot tell which process holds a socket: every local process can reach the functions' Runtime API")
    });
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_client_side_of_a_connection_is_found_by_its_addresses() {
        let table = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n   0: 0100007F:A1B2 0100007F:1F90 01 00000000:00000000 00:00000000 00000000     0        0 4242 1 0000000000000000 20 4 30 10 -1\n   1: 0100007F:1F90 0100007F:A1B2 01 00000000:00000000 00:00000000 00000000     0        0 4343 1 0000000000000000 20 4 30 10 -1\n";
        let peer: SocketAddrV4 = "127.0.0.1:41394".parse().unwrap();
        let listener: SocketAddrV4 = "127.0.0.1:8080".parse().unwrap();
        if cfg!(target_endian = "little") {
            assert_eq!(socket_inode(table, peer, listener), Some(4242));
            assert_eq!(socket_inode(table, listener, peer), Some(4343));
        }
        assert_eq!(socket_inode(table, "127.0.0.1:1".parse().unwrap(), listener), None);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn this_process_holds_its_own_connection_and_not_another_ones() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (_accepted, peer) = listener.accept().unwrap();
        assert_eq!(peer, client.local_addr().unwrap());
        assert!(held_by(std::process::id(), peer, listener.local_addr().unwrap()));
        // PID 1 is never this test.
        assert!(!held_by(1, peer, listener.local_addr().unwrap()));
    }
}
