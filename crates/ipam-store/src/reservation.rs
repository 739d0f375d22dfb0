//! What a reservation file says and who may claim it.
//!
//! A reservation is the file `<network dir>/<ip>`; its contents name the
//! owner as `<containerID>\r\n<ifname>` with no trailing newline. Files
//! written before the reference knew about ifnames hold only the container
//! ID. Readers trim surrounding whitespace, as the reference does.

use std::net::IpAddr;

/// Separator between container ID and ifname, kept byte-for-byte from the
/// reference (it is `\r\n` on every OS).
pub(crate) const LINE_BREAK: &str = "\r\n";

/// One attachment: a container's interface. This is what the store is asked
/// to reserve, release, look up or keep.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Owner {
    pub container_id: String,
    pub ifname: String,
}

impl Owner {
    pub fn new(container_id: impl Into<String>, ifname: impl Into<String>) -> Owner {
        Owner {
            container_id: container_id.into(),
            ifname: ifname.into(),
        }
    }

    /// The ID as the reference compares it (it trims before writing and matching).
    pub(crate) fn id(&self) -> &str {
        self.container_id.trim()
    }

    /// Exact bytes of a reservation file for this owner.
    pub(crate) fn file_contents(&self) -> String {
        format!("{}{LINE_BREAK}{}", self.id(), self.ifname)
    }
}

/// Who a reservation file names.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum FileOwner {
    /// `<containerID>\r\n<ifname>`.
    Attachment(Owner),
    /// Only `<containerID>`: written by old versions of the reference.
    /// Matches any ifname of that container.
    Legacy { container_id: String },
}

impl FileOwner {
    /// Parses trimmed file contents.
    pub(crate) fn parse(contents: &str) -> FileOwner {
        let trimmed = contents.trim();
        match trimmed.split_once(LINE_BREAK) {
            Some((id, ifname)) => FileOwner::Attachment(Owner::new(id, ifname)),
            None => FileOwner::Legacy {
                container_id: trimmed.to_string(),
            },
        }
    }

    pub fn container_id(&self) -> &str {
        match self {
            FileOwner::Attachment(owner) => &owner.container_id,
            FileOwner::Legacy { container_id } => container_id,
        }
    }

    /// The file was written for exactly this attachment.
    pub(crate) fn is_attachment_of(&self, owner: &Owner) -> bool {
        matches!(self, FileOwner::Attachment(o) if o.container_id == owner.id() && o.ifname == owner.ifname)
    }

    /// The file is a legacy file of this owner's container.
    pub(crate) fn is_legacy_of(&self, owner: &Owner) -> bool {
        matches!(self, FileOwner::Legacy { container_id } if container_id == owner.id())
    }

    /// The file belongs to `owner` in either format.
    pub(crate) fn belongs_to(&self, owner: &Owner) -> bool {
        self.is_attachment_of(owner) || self.is_legacy_of(owner)
    }
}

/// One reserved address and its owner.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Reservation {
    pub ip: IpAddr,
    pub owner: FileOwner,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contents_round_trip_and_legacy() {
        let owner = Owner::new(" abc ", "eth0");
        assert_eq!(owner.file_contents(), "abc\r\neth0");
        assert!(FileOwner::parse("abc\r\neth0\n").is_attachment_of(&owner));
        assert!(FileOwner::parse("  abc \n").is_legacy_of(&owner));
        assert!(!FileOwner::parse("abc\r\neth1").belongs_to(&owner));
        assert!(!FileOwner::parse("abcd").belongs_to(&owner));
    }
}
