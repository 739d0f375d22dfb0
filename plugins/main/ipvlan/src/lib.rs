//! The ipvlan plugin's configuration: keys, defaults and validation (no
//! kernel access), as a library for the binary and the fuzz targets.

pub mod config;
