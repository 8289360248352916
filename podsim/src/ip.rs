//! Pod IP allocation in 127.0.0.0/8.

use std::collections::HashSet;
use std::net::Ipv4Addr;

/// Whether `ip` may be used as a simulated Pod IP: in 127.0.0.0/8, never 127.0.0.1, and
/// not a network (`.0`) or broadcast-looking (`.255`) address.
pub(crate) fn is_pod_ip(ip: Ipv4Addr) -> bool {
    let o = ip.octets();
    o[0] == 127 && ip != Ipv4Addr::new(127, 0, 0, 1) && o[3] != 0 && o[3] != 255
}

/// Hands out unique addresses `127.<b>.x.y` for a prefix `[127, b]`.
///
/// Addresses are handed out in order and wrap around, so a freed address is reused as
/// late as possible.
#[derive(Debug)]
pub(crate) struct IpAllocator {
    prefix: [u8; 2],
    next: u16,
    used: HashSet<Ipv4Addr>,
}

impl IpAllocator {
    pub(crate) fn new(prefix: [u8; 2]) -> Self {
        IpAllocator {
            prefix,
            next: 1,
            used: HashSet::new(),
        }
    }

    /// Allocates a fresh address that is neither in use here nor in `avoid`.
    pub(crate) fn allocate(&mut self, avoid: &HashSet<Ipv4Addr>) -> Option<Ipv4Addr> {
        for i in 0..=u16::MAX {
            let host = self.next.wrapping_add(i);
            let [x, y] = host.to_be_bytes();
            let ip = Ipv4Addr::new(self.prefix[0], self.prefix[1], x, y);
            if is_pod_ip(ip) && !self.used.contains(&ip) && !avoid.contains(&ip) {
                self.next = host.wrapping_add(1);
                self.used.insert(ip);
                return Some(ip);
            }
        }
        None
    }

    /// Marks an address (e.g. one re-adopted from a Pod's status) as in use.
    /// Returns false if it is not a usable Pod IP or already in use.
    pub(crate) fn reserve(&mut self, ip: Ipv4Addr) -> bool {
        is_pod_ip(ip) && self.used.insert(ip)
    }

    /// Returns an address to the pool.
    pub(crate) fn release(&mut self, ip: Ipv4Addr) {
        self.used.remove(&ip);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocates_unique_addresses_in_prefix() {
        let mut a = IpAllocator::new([127, 42]);
        let none = HashSet::new();
        let mut seen = HashSet::new();
        for _ in 0..1000 {
            let ip = a.allocate(&none).unwrap();
            assert_eq!(&ip.octets()[..2], &[127, 42]);
            assert!(is_pod_ip(ip));
            assert!(seen.insert(ip), "{ip} handed out twice");
        }
    }

    #[test]
    fn never_hands_out_localhost() {
        let mut a = IpAllocator::new([127, 0]);
        let none = HashSet::new();
        let first = a.allocate(&none).unwrap();
        assert_eq!(first, Ipv4Addr::new(127, 0, 0, 2));
        while let Some(ip) = a.allocate(&none) {
            assert_ne!(ip, Ipv4Addr::LOCALHOST);
        }
        // 256 * 254 host addresses minus 127.0.0.1 (and the one already taken)
        assert_eq!(a.used.len(), 256 * 254 - 1);
    }

    #[test]
    fn avoids_foreign_and_reserved_addresses() {
        let mut a = IpAllocator::new([127, 7]);
        assert!(a.reserve(Ipv4Addr::new(127, 7, 0, 1)));
        assert!(!a.reserve(Ipv4Addr::new(127, 7, 0, 1)));
        assert!(!a.reserve(Ipv4Addr::LOCALHOST));
        assert!(!a.reserve(Ipv4Addr::new(10, 0, 0, 1)));
        let avoid = HashSet::from([Ipv4Addr::new(127, 7, 0, 2)]);
        assert_eq!(a.allocate(&avoid), Some(Ipv4Addr::new(127, 7, 0, 3)));
    }

    #[test]
    fn released_addresses_are_reused_last() {
        let mut a = IpAllocator::new([127, 9]);
        let none = HashSet::new();
        let first = a.allocate(&none).unwrap();
        a.release(first);
        let second = a.allocate(&none).unwrap();
        assert_ne!(first, second);
        // exhaust everything else: the released one comes back eventually
        let mut last = second;
        while let Some(ip) = a.allocate(&none) {
            last = ip;
        }
        assert_eq!(last, first);
    }
}
