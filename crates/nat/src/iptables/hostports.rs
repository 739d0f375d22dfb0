use crate::HostPorts;
use crate::error::Result;

pub fn add(_hp: &HostPorts<'_>) -> Result<()> {
    todo!()
}
pub fn check(_hp: &HostPorts<'_>) -> Result<()> {
    todo!()
}
pub fn del(_network: &str, _container_id: &str) -> Result<()> {
    todo!()
}
pub fn gc(_network: &str, _keep: &[String]) -> Result<()> {
    todo!()
}
