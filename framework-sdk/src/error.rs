//! The SDK's error type.

/// Everything that can go wrong in the SDK.
///
/// Errors from the master carry the gRPC [`tonic::Status`] it answered with.
#[derive(Debug, thiserror::Error)]
pub enum SdkError {
    /// The `master` address in [`DriverConfig`](crate::DriverConfig) is not usable.
    #[error("invalid master address '{address}': {reason}")]
    InvalidMaster {
        /// The address as given.
        address: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A call needs a framework id and the framework has not subscribed yet.
    #[error("not subscribed yet: the master has not assigned a framework id")]
    NotSubscribed,
    /// A call to the master failed (it answered with an error, or could not be reached in time).
    #[error("{call} failed: {status}")]
    Call {
        /// The scheduler call that failed (`accept`, `decline`, ...).
        call: &'static str,
        /// What the master (or the transport) answered.
        status: tonic::Status,
    },
    /// The master refused the subscription with a status that retrying cannot fix
    /// (`INVALID_ARGUMENT`, `PERMISSION_DENIED`, `FAILED_PRECONDITION`, `UNAUTHENTICATED`),
    /// e.g. an invalid `FrameworkInfo` or a framework id that was torn down.
    #[error("subscription refused by the master: {0}")]
    Refused(tonic::Status),
}

impl SdkError {
    /// The gRPC status behind this error, when the master (or the transport) produced one.
    pub fn status(&self) -> Option<&tonic::Status> {
        match self {
            SdkError::Call { status, .. } | SdkError::Refused(status) => Some(status),
            SdkError::InvalidMaster { .. } | SdkError::NotSubscribed => None,
        }
    }
}
