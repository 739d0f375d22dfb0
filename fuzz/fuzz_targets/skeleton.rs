//! The whole plugin protocol layer (cni::dispatch): environment, stdin,
//! CNI_ARGS, version checks, prevResult decoding and result printing, with a
//! plugin that decodes a typed configuration and echoes prevResult. The
//! input chooses the verb and supplies CNI_ARGS, the container id, the
//! interface name and stdin. No panic, and the output is always JSON (or
//! nothing).
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;

#[derive(Debug, Arbitrary)]
struct Input {
    verb: u8,
    args: Option<String>,
    container_id: String,
    ifname: String,
    stdin: Vec<u8>,
}

const VERBS: &[&str] = &["ADD", "DEL", "CHECK", "VERSION", "GC", "STATUS", "BOGUS"];

#[allow(dead_code)] // fields exist to be decoded
#[derive(serde::Deserialize)]
struct Conf {
    #[serde(default)]
    bridge: Option<String>,
    #[serde(default)]
    mtu: Option<u32>,
    #[serde(default, rename = "isGateway")]
    is_gateway: bool,
}

struct Echo;

impl cni::Plugin for Echo {
    const NAME: &'static str = "fuzz";
    const VERSION: &'static str = "0.0.0";
    fn add(&self, req: &cni::Request) -> cni::Result<cni::CniResult> {
        let _: Conf = req.plugin_config()?;
        let _ = req.args.check_known(&["IP"]);
        Ok(req.prev_result()?.unwrap_or_default())
    }
    fn del(&self, req: &cni::Request) -> cni::Result<()> {
        req.prev_result().map(|_| ())
    }
    fn check(&self, req: &cni::Request) -> cni::Result<()> {
        req.require_prev_result().map(|_| ())
    }
}

fuzz_target!(|input: Input| {
    let verb = VERBS[usize::from(input.verb) % VERBS.len()];
    let getenv = |k: &str| -> Option<String> {
        match k {
            "CNI_COMMAND" => Some(verb.into()),
            "CNI_CONTAINERID" => Some(input.container_id.clone()),
            // A path that is never this process's own namespace.
            "CNI_NETNS" => Some("/nonexistent/netns".into()),
            "CNI_IFNAME" => Some(input.ifname.clone()),
            "CNI_ARGS" => input.args.clone(),
            "CNI_PATH" => Some("/nonexistent".into()),
            _ => None,
        }
    };
    let mut stdin = &input.stdin[..];
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let _code = cni::dispatch(&Echo, &getenv, &mut stdin, &mut out, &mut err);
    if !out.is_empty() {
        serde_json::from_slice::<serde_json::Value>(&out).unwrap_or_else(|e| {
            panic!(
                "stdout is not JSON ({e}): {}",
                String::from_utf8_lossy(&out)
            )
        });
    }
});
