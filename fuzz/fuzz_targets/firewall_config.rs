//! The firewall plugin's configuration (`firewall::config::parse`) behind
//! the real protocol layer: any stdin for ADD. No panic; an accepted
//! configuration only holds values that are safe to put in a rule (the
//! admin chain passes netfilter's chain-name check, the data directory is
//! absolute).
#![no_main]

use libfuzzer_sys::fuzz_target;

struct Parse;

impl cni::Plugin for Parse {
    const NAME: &'static str = "fuzz-firewall";
    const VERSION: &'static str = "0.0.0";
    fn add(&self, req: &cni::Request) -> cni::Result<cni::CniResult> {
        let conf = firewall::config::parse(req)?;
        assert!(netfilter::validate::chain_name(&conf.admin_chain).is_ok());
        assert!(conf.data_dir.starts_with('/'));
        assert!(!conf.zone.is_empty());
        Ok(req.prev_result()?.unwrap_or_default())
    }
    fn del(&self, _req: &cni::Request) -> cni::Result<()> {
        Ok(())
    }
    fn check(&self, _req: &cni::Request) -> cni::Result<()> {
        Ok(())
    }
}

fuzz_target!(|data: &[u8]| {
    let env = |k: &str| -> Option<String> {
        match k {
            "CNI_COMMAND" => Some("ADD".into()),
            "CNI_CONTAINERID" => Some("fuzz".into()),
            "CNI_NETNS" => Some("/var/run/netns/fuzz".into()),
            "CNI_IFNAME" => Some("eth0".into()),
            "CNI_PATH" => Some("/opt/cni/bin".into()),
            _ => None,
        }
    };
    let mut stdin = data;
    let (mut out, mut err) = (Vec::new(), Vec::new());
    cni::dispatch(&Parse, &env, &mut stdin, &mut out, &mut err);
});
