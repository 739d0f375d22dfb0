//! The firewall plugin's configuration parser, as a library so the fuzz
//! targets can reach it; the plugin itself is `src/main.rs`.

pub mod config;
