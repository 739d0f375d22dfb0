//! Ethernet (EUI-48) addresses as CNI writes them: lowercase, colon-separated.

use std::fmt;
use std::str::FromStr;

use crate::error::Error;

/// A 6-byte hardware address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MacAddr(pub [u8; 6]);

impl MacAddr {
    /// From netlink's `IFLA_ADDRESS` bytes; `None` unless exactly 6 bytes.
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        <[u8; 6]>::try_from(bytes).ok().map(MacAddr)
    }

    pub fn octets(&self) -> [u8; 6] {
        self.0
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            b[0], b[1], b[2], b[3], b[4], b[5]
        )
    }
}

impl FromStr for MacAddr {
    type Err = Error;

    /// Accepts `aa:bb:cc:dd:ee:ff` and `aa-bb-cc-dd-ee-ff` (any case), the
    /// 6-byte forms Go's `net.ParseMAC` accepts.
    fn from_str(s: &str) -> Result<Self, Error> {
        let bad = || Error::InvalidMac(s.to_string());
        let sep = if s.contains(':') { ':' } else { '-' };
        let mut out = [0u8; 6];
        let mut parts = s.split(sep);
        for byte in out.iter_mut() {
            let part = parts.next().ok_or_else(bad)?;
            if part.len() != 2 {
                return Err(bad());
            }
            *byte = u8::from_str_radix(part, 16).map_err(|_| bad())?;
        }
        if parts.next().is_some() {
            return Err(bad());
        }
        Ok(MacAddr(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_lowercase() {
        let m: MacAddr = "0A:58:0a:01:02:03".parse().unwrap();
        assert_eq!(m.to_string(), "0a:58:0a:01:02:03");
        let h: MacAddr = "0a-58-0a-01-02-03".parse().unwrap();
        assert_eq!(m, h);
    }

    #[test]
    fn refuses_malformed() {
        for bad in [
            "",
            "0a:58:0a:01:02",
            "0a:58:0a:01:02:03:04",
            "0a:58:0a:01:02:zz",
            "0a:58:0a:1:02:03",
        ] {
            let e = bad.parse::<MacAddr>().unwrap_err();
            assert_eq!(e.to_string(), format!("address {bad}: invalid MAC address"));
        }
    }
}
