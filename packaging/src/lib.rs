//! Package metadata only: this crate exists so that `cargo deb` and
//! `cargo generate-rpm` have one place to read the `.deb` and `.rpm`
//! descriptions from (see `Cargo.toml`). It has no code; the packaged
//! binaries are built by the plugin crates and `runtime` (cnictl).
