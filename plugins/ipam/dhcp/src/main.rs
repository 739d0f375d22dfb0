//! `dhcp`: the CNI IPAM plugin, or with `daemon` as first argument the
//! lease daemon it talks to.

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("daemon") {
        std::process::exit(dhcp::daemon::main(&args[2..]));
    }
    cni::run(&dhcp::plugin::Dhcp)
}
