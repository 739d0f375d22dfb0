//! The IPAM plugin: validates its configuration, then asks the daemon.

use std::os::unix::net::UnixStream;

use cni::{CniResult, Error, Plugin, Request, Result, code};

use crate::config::Config;
use crate::protocol::{self, Reply, Verb};

pub struct Dhcp;

fn how_to_start(socket: &str) -> String {
    format!(
        "is the dhcp daemon running? Start it with `systemctl enable --now cni-dhcp.socket`, \
         or by hand with `dhcp daemon -socketpath {socket}`"
    )
}

/// One request to the daemon; `unreachable` is the code when nothing
/// answers on the socket.
fn call(
    conf: &Config,
    req: protocol::Request,
    unreachable: u32,
) -> Result<Option<crate::lease::Binding>> {
    let socket = &conf.socket_path;
    let mut stream = UnixStream::connect(socket).map_err(|e| {
        Error::new(
            unreachable,
            format!("error dialing DHCP daemon at {socket}: {e}"),
        )
        .with_details(how_to_start(socket))
    })?;
    if req.verb == Verb::Status {
        // STATUS asks whether the daemon answers, not whether it is busy.
        let _ = stream.set_read_timeout(Some(std::time::Duration::from_secs(5)));
    }
    protocol::write_message(&mut stream, &req)
        .map_err(|e| Error::io(format!("error calling DHCP daemon at {socket}: {e}")))?;
    match protocol::read_message::<Reply>(&mut stream) {
        Ok(Reply::Ok(b)) => Ok(b),
        Ok(Reply::Error(e)) => Err(e),
        Err(e) => Err(Error::io(format!(
            "error reading the DHCP daemon's reply on {socket}: {e}"
        ))
        .with_details(
            "the plugin speaks only to its own `dhcp daemon`; another daemon \
             (such as the Go reference's) may be listening on this socket",
        )),
    }
}

fn request(verb: Verb, req: &Request, conf: &Config) -> Result<protocol::Request> {
    let netns = if req.netns.is_empty() {
        String::new()
    } else {
        // The daemon may run in another working directory.
        std::path::absolute(&req.netns)
            .map_err(|e| {
                Error::new(
                    code::INVALID_NETNS,
                    format!("failed to make {:?} an absolute path: {e}", req.netns),
                )
            })?
            .to_string_lossy()
            .into_owned()
    };
    Ok(protocol::Request {
        verb,
        container_id: req.container_id.clone(),
        network: conf.network.clone(),
        ifname: req.ifname.clone(),
        netns,
        options: conf.options.clone(),
        keep: Vec::new(),
    })
}

impl Plugin for Dhcp {
    const NAME: &'static str = "dhcp";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");

    fn add(&self, req: &Request) -> Result<CniResult> {
        let conf = Config::parse(&req.stdin, &req.args)?;
        let binding = call(&conf, request(Verb::Add, req, &conf)?, code::INTERNAL)?
            .ok_or_else(|| Error::internal("the DHCP daemon returned no lease"))?;
        Ok(binding.to_result(conf.priority))
    }

    fn del(&self, req: &Request) -> Result<()> {
        let conf = Config::parse(&req.stdin, &req.args)?;
        call(&conf, request(Verb::Del, req, &conf)?, code::INTERNAL).map(|_| ())
    }

    fn check(&self, req: &Request) -> Result<()> {
        let conf = Config::parse(&req.stdin, &req.args)?;
        let binding = call(&conf, request(Verb::Check, req, &conf)?, code::INTERNAL)?
            .ok_or_else(|| Error::internal("the DHCP daemon returned no lease"))?;
        if let Some(prev) = req.prev_result()? {
            let held = std::net::IpAddr::V4(binding.address);
            if !prev.ips.iter().any(|ip| ip.address.ip() == held) {
                return Err(Error::internal(format!(
                    "dhcp: leased address {held} is missing from prevResult"
                )));
            }
        }
        Ok(())
    }

    fn status(&self, req: &Request) -> Result<()> {
        let conf = Config::parse(&req.stdin, &req.args)?;
        call(
            &conf,
            request(Verb::Status, req, &conf)?,
            code::NOT_AVAILABLE,
        )
        .map(|_| ())
    }

    fn gc(&self, req: &Request) -> Result<()> {
        let Some(valid) = req.config.gc_attachments() else {
            return Ok(());
        };
        let conf = Config::parse(&req.stdin, &req.args)?;
        let mut r = request(Verb::Gc, req, &conf)?;
        r.keep = valid.to_vec();
        call(&conf, r, code::INTERNAL).map(|_| ())
    }
}
