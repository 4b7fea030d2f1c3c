/// Errors of configuring a function (what a config-space write would refuse or ignore).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The function does not implement the capability.
    #[error("the function has no {0} capability")]
    NoCapability(&'static str),
    /// The enable order PCIe requires was not followed.
    #[error("{0}")]
    Order(&'static str),
    /// A PRI allocation of zero or above the function's capacity.
    #[error("PRI allocation {asked} is outside 1..={capacity}")]
    Allocation {
        /// What software asked for.
        asked: u32,
        /// Outstanding Page Request Capacity.
        capacity: u32,
    },
}
