//! The store against real files in temp directories.

use std::fs;
use std::net::IpAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use ipam_store::{Error, FileOwner, Owner, Range, RangeSet, Store, allocate};

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn set(subnet: &str) -> RangeSet {
    RangeSet::new(vec![
        Range::new(subnet.parse().unwrap(), None, None, None).unwrap(),
    ])
    .unwrap()
}

fn read(dir: &Path, name: &str) -> String {
    fs::read_to_string(dir.join(name)).unwrap()
}

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    v.sort();
    v
}

#[test]
fn reservation_file_is_byte_compatible_with_the_reference() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(tmp.path(), "net1").unwrap();
    let mut locked = store.lock().unwrap();
    let owner = Owner::new("ctr1", "eth0");
    assert!(locked.reserve(ip("10.1.2.2"), &owner, 0).unwrap());
    drop(locked);

    let dir = tmp.path().join("net1");
    assert_eq!(read(&dir, "10.1.2.2"), "ctr1\r\neth0");
    assert_eq!(read(&dir, "last_reserved_ip.0"), "10.1.2.2");
    assert_eq!(read(&dir, "lock"), "");
    let mode = fs::metadata(dir.join("10.1.2.2"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    assert_eq!(names(&dir), ["10.1.2.2", "last_reserved_ip.0", "lock"]);
    // Nothing staged is left behind.
    let staging = tmp.path().join(".net1.cni-rs-index/tmp");
    assert!(names(&staging).is_empty());
}

#[test]
fn taken_address_is_not_reserved_twice() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(tmp.path(), "net1").unwrap();
    let mut locked = store.lock().unwrap();
    assert!(
        locked
            .reserve(ip("10.0.0.2"), &Owner::new("a", "eth0"), 0)
            .unwrap()
    );
    assert!(
        !locked
            .reserve(ip("10.0.0.2"), &Owner::new("b", "eth0"), 0)
            .unwrap()
    );
    assert_eq!(read(store.dir(), "10.0.0.2"), "a\r\neth0");
}

#[test]
fn release_by_attachment_then_legacy_fallback() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(tmp.path(), "net1").unwrap();
    let dir = store.dir().to_path_buf();
    // Written as older reference versions and other tools would.
    fs::write(dir.join("10.0.0.5"), "ctr1").unwrap();
    fs::write(dir.join("10.0.0.6"), "  ctr1\r\neth1 \n").unwrap();
    fs::write(dir.join("2001:db8::5"), "ctr2\r\neth0").unwrap();

    let mut locked = store.lock().unwrap();
    // eth1 has an exact match: only that file goes.
    assert_eq!(
        locked.release(&Owner::new("ctr1", "eth1")).unwrap(),
        [ip("10.0.0.6")]
    );
    // eth0 has none: the legacy id-only file goes, as in the reference.
    assert_eq!(
        locked.release(&Owner::new("ctr1", "eth0")).unwrap(),
        [ip("10.0.0.5")]
    );
    // Unknown container: success, nothing removed.
    assert!(
        locked
            .release(&Owner::new("nope", "eth0"))
            .unwrap()
            .is_empty()
    );
    assert_eq!(names(&dir), ["2001:db8::5", "lock"]);
}

#[test]
fn index_heals_after_files_change_behind_its_back() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(tmp.path(), "net1").unwrap();
    let dir = store.dir().to_path_buf();
    {
        let mut locked = store.lock().unwrap();
        assert!(
            locked
                .reserve(ip("10.0.0.2"), &Owner::new("a", "eth0"), 0)
                .unwrap()
        );
    }
    // Another implementation (the Go plugin) adds and removes files.
    fs::write(dir.join("10.0.0.3"), "b\r\neth0").unwrap();
    fs::remove_file(dir.join("10.0.0.2")).unwrap();
    let mut locked = store.lock().unwrap();
    assert!(locked.lookup(&Owner::new("a", "eth0")).unwrap().is_empty());
    assert_eq!(
        locked.lookup(&Owner::new("b", "eth0")).unwrap(),
        [ip("10.0.0.3")]
    );
    assert_eq!(
        locked.release(&Owner::new("b", "eth0")).unwrap(),
        [ip("10.0.0.3")]
    );
}

#[test]
fn index_entry_that_lies_is_verified_and_ignored() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(tmp.path(), "net1").unwrap();
    let dir = store.dir().to_path_buf();
    {
        let mut locked = store.lock().unwrap();
        assert!(
            locked
                .reserve(ip("10.0.0.2"), &Owner::new("a", "eth0"), 0)
                .unwrap()
        );
    }
    // Rewrite contents in place: the directory's times do not change, so
    // only verification against the file can catch it.
    fs::write(dir.join("10.0.0.2"), "c\r\neth0").unwrap();
    let mut locked = store.lock().unwrap();
    assert!(locked.lookup(&Owner::new("a", "eth0")).unwrap().is_empty());
    assert_eq!(
        locked.lookup(&Owner::new("c", "eth0")).unwrap(),
        [ip("10.0.0.2")]
    );
}

#[test]
fn gc_keeps_valid_attachments_and_never_touches_bookkeeping() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(tmp.path(), "net1").unwrap();
    let dir = store.dir().to_path_buf();
    {
        let mut locked = store.lock().unwrap();
        locked
            .reserve(ip("10.0.0.2"), &Owner::new("a", "eth0"), 0)
            .unwrap();
        locked
            .reserve(ip("10.0.0.3"), &Owner::new("a", "eth1"), 0)
            .unwrap();
        locked
            .reserve(ip("10.0.0.4"), &Owner::new("b", "eth0"), 1)
            .unwrap();
    }
    fs::write(dir.join("10.0.0.9"), "a").unwrap(); // legacy, container a is valid
    fs::write(dir.join("10.0.0.10"), "z").unwrap(); // legacy, unknown container

    let mut locked = store.lock().unwrap();
    let report = locked.gc(&[Owner::new("a", "eth0")]).unwrap();
    assert!(report.errors.is_empty());
    let mut removed: Vec<String> = report.removed.iter().map(|r| r.ip.to_string()).collect();
    removed.sort();
    assert_eq!(removed, ["10.0.0.10", "10.0.0.3", "10.0.0.4"]);
    drop(locked);
    assert_eq!(
        names(&dir),
        [
            "10.0.0.2",
            "10.0.0.9",
            "last_reserved_ip.0",
            "last_reserved_ip.1",
            "lock"
        ]
    );

    // An empty keep list removes every reservation, still not the bookkeeping.
    let mut locked = store.lock().unwrap();
    assert_eq!(locked.gc(&[]).unwrap().removed.len(), 2);
    drop(locked);
    assert_eq!(
        names(&dir),
        ["last_reserved_ip.0", "last_reserved_ip.1", "lock"]
    );
}

#[test]
fn crash_leftovers_in_staging_are_cleaned_and_never_visible() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(tmp.path(), "net1").unwrap();
    let staging = tmp.path().join(".net1.cni-rs-index/tmp");
    fs::write(staging.join("10.0.0.7.99999"), "half").unwrap();
    // Someone else changes the directory, so the next operation rebuilds
    // the index and sweeps staging.
    fs::write(store.dir().join("10.0.0.8"), "x\r\neth0").unwrap();
    let mut locked = store.lock().unwrap();
    assert!(locked.lookup(&Owner::new("x", "eth0")).unwrap() == [ip("10.0.0.8")]);
    assert!(names(&staging).is_empty());
    assert!(!store.dir().join("10.0.0.7").exists());
}

#[test]
fn network_name_cannot_escape_data_dir() {
    let tmp = tempfile::tempdir().unwrap();
    for bad in ["../evil", "a/b", "..", ".", "", ".hidden"] {
        assert!(
            matches!(
                Store::open(tmp.path(), bad),
                Err(Error::InvalidNetworkName(_))
            ),
            "{bad:?}"
        );
    }
    let outside = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(outside.path(), tmp.path().join("linked")).unwrap();
    assert!(matches!(
        Store::open(tmp.path(), "linked"),
        Err(Error::NotADirectory(_))
    ));
    assert!(names(outside.path()).is_empty());
}

#[test]
fn allocator_messages_match_the_reference() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(tmp.path(), "net1").unwrap();
    let mut locked = store.lock().unwrap();
    let s = set("10.0.0.0/30"); // one allocatable address: .2
    let a = Owner::new("a", "eth0");
    let got = allocate(&mut locked, &s, 0, &a, None).unwrap();
    assert_eq!(got.address.to_string(), "10.0.0.2/30");
    assert_eq!(got.gateway, ip("10.0.0.1"));

    let msg = |r: ipam_store::Result<_>| r.unwrap_err().to_string();
    assert_eq!(
        msg(allocate(&mut locked, &s, 0, &a, None)),
        "10.0.0.2 has been allocated to a, duplicate allocation is not allowed"
    );
    let b = Owner::new("b", "eth0");
    assert_eq!(
        msg(allocate(&mut locked, &s, 0, &b, None)),
        "no IP addresses available in range set: 10.0.0.1-10.0.0.2"
    );
    assert_eq!(
        msg(allocate(&mut locked, &s, 0, &b, Some(ip("10.0.0.1")))),
        "requested ip 10.0.0.1 is subnet's gateway"
    );
    assert_eq!(
        msg(allocate(&mut locked, &s, 0, &b, Some(ip("10.0.0.2")))),
        "requested IP address 10.0.0.2 is not available in range set 10.0.0.1-10.0.0.2"
    );
    assert_eq!(locked.count_reserved_in(&s).unwrap(), s.capacity());
}

#[test]
fn legacy_file_counts_as_duplicate() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(tmp.path(), "net1").unwrap();
    fs::write(store.dir().join("10.0.0.9"), "a").unwrap();
    let mut locked = store.lock().unwrap();
    let err = allocate(
        &mut locked,
        &set("10.0.0.0/24"),
        0,
        &Owner::new("a", "eth0"),
        None,
    );
    assert_eq!(
        err.unwrap_err().to_string(),
        "10.0.0.9 has been allocated to a, duplicate allocation is not allowed"
    );
}

#[test]
fn threads_allocating_at_once_get_distinct_addresses() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().to_path_buf();
    let handles: Vec<_> = (0..16)
        .map(|i| {
            let path = path.clone();
            std::thread::spawn(move || {
                // Each thread opens its own lock file description, as
                // separate processes would, so flock really arbitrates.
                let store = Store::open(&path, "net1").unwrap();
                let mut locked = store.lock().unwrap();
                allocate(
                    &mut locked,
                    &set("10.0.0.0/24"),
                    0,
                    &Owner::new(format!("c{i}"), "eth0"),
                    None,
                )
                .unwrap()
                .address
                .ip()
            })
        })
        .collect();
    let mut got: Vec<IpAddr> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    got.sort();
    got.dedup();
    assert_eq!(got.len(), 16);
    let store = Store::open(&path, "net1").unwrap();
    let all = store.lock().unwrap().reservations().unwrap();
    assert_eq!(all.len(), 16);
    assert!(
        all.iter()
            .all(|r| matches!(&r.owner, FileOwner::Attachment(o) if o.ifname == "eth0"))
    );
}

#[test]
fn lookup_uses_the_index_not_a_scan() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(tmp.path(), "net1").unwrap();
    let dir = store.dir().to_path_buf();
    {
        let mut locked = store.lock().unwrap();
        locked
            .reserve(ip("10.0.0.2"), &Owner::new("a", "eth0"), 0)
            .unwrap();
        locked
            .reserve(ip("10.0.0.3"), &Owner::new("b", "eth0"), 0)
            .unwrap();
    }
    // An in-place rewrite does not change the directory, so a lookup that
    // trusts the sealed index does not see it, while a scan would. (No
    // writer does this; it only shows which path answered.)
    fs::write(dir.join("10.0.0.3"), "a\r\neth0").unwrap();
    let mut locked = store.lock().unwrap();
    assert_eq!(
        locked.lookup(&Owner::new("a", "eth0")).unwrap(),
        [ip("10.0.0.2")]
    );
    let scanned = locked
        .reservations()
        .unwrap()
        .into_iter()
        .filter(|r| r.owner.container_id() == "a")
        .count();
    assert_eq!(scanned, 2);
}

#[test]
fn unreserve_gives_back_only_that_address() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(tmp.path(), "net1").unwrap();
    let a = Owner::new("a", "eth0");
    let mut locked = store.lock().unwrap();
    locked.reserve(ip("10.0.0.2"), &a, 0).unwrap();
    locked.reserve(ip("10.0.1.2"), &a, 1).unwrap();
    assert!(
        !locked
            .unreserve(ip("10.0.1.2"), &Owner::new("b", "eth0"))
            .unwrap()
    );
    assert!(locked.unreserve(ip("10.0.1.2"), &a).unwrap());
    assert_eq!(locked.lookup(&a).unwrap(), [ip("10.0.0.2")]);
}

#[test]
fn many_containers_sharing_index_buckets_stay_distinct() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(tmp.path(), "net1").unwrap();
    let owner = |i: u32| Owner::new(format!("ctr-{i}"), "eth0");
    let addr = |i: u32| IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000 + i));
    let mut locked = store.lock().unwrap();
    // 1000 containers over 256 buckets: every bucket holds several.
    for i in 0..1000 {
        assert!(locked.reserve(addr(i), &owner(i), 0).unwrap());
    }
    for i in (0..1000).step_by(2) {
        assert_eq!(locked.release(&owner(i)).unwrap(), [addr(i)]);
    }
    drop(locked);
    let mut locked = store.lock().unwrap();
    for i in 0..1000 {
        let expected: Vec<IpAddr> = if i % 2 == 0 { vec![] } else { vec![addr(i)] };
        assert_eq!(locked.lookup(&owner(i)).unwrap(), expected, "ctr-{i}");
    }
    assert_eq!(locked.reservations().unwrap().len(), 500);
}

#[test]
fn staging_leftover_is_removed_at_the_next_lock() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(tmp.path(), "net1").unwrap();
    store
        .lock()
        .unwrap()
        .reserve(ip("10.0.0.2"), &Owner::new("a", "eth0"), 0)
        .unwrap();
    // A process killed between staging and linking: the network directory
    // is unchanged, so only the sweep at lock time can notice.
    let staging = tmp.path().join(".net1.cni-rs-index/tmp");
    fs::write(staging.join("10.0.0.3.4242"), "b\r\neth0").unwrap();
    let _locked = store.lock().unwrap();
    assert!(names(&staging).is_empty());
    assert!(!store.dir().join("10.0.0.3").exists());
}

#[test]
fn removing_the_index_directory_at_any_time_is_harmless() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(tmp.path(), "net1").unwrap();
    let index = tmp.path().join(".net1.cni-rs-index");
    let mut locked = store.lock().unwrap();
    locked
        .reserve(ip("10.0.0.2"), &Owner::new("a", "eth0"), 0)
        .unwrap();
    fs::remove_dir_all(&index).unwrap();
    // Mid-session: staging and index updates fail, reservations still work.
    assert!(
        locked
            .reserve(ip("10.0.0.3"), &Owner::new("b", "eth0"), 0)
            .unwrap()
    );
    assert_eq!(read(store.dir(), "10.0.0.3"), "b\r\neth0");
    assert_eq!(
        locked.release(&Owner::new("a", "eth0")).unwrap(),
        [ip("10.0.0.2")]
    );
    drop(locked);
    // A new store recreates the index and finds everything.
    let store = Store::open(tmp.path(), "net1").unwrap();
    let mut locked = store.lock().unwrap();
    assert_eq!(
        locked.lookup(&Owner::new("b", "eth0")).unwrap(),
        [ip("10.0.0.3")]
    );
    assert!(index.join("stamp").exists());
}
