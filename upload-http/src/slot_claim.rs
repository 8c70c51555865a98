//! A slot's single use, decided in PostgreSQL before any byte is stored: a
//! PUT claims its resource in `used_slots` (on any node; the claim outlives
//! the file), and gives the claim back only if it ends without a stored,
//! logged file — whether it returns an error or is dropped mid-body.

use mft_common::error::Chain;
use mft_storage::transfer_log::TransferLog;

use crate::error::HttpError;

/// A held claim; released on drop unless [`SlotClaim::keep`] was called.
pub(crate) struct SlotClaim {
    log: TransferLog,
    resource: String,
    kept: bool,
}

impl SlotClaim {
    /// Claims `resource` for an upload through `node`; `409` when the slot
    /// was used before or an upload into it is in progress anywhere.
    pub(crate) async fn take(
        log: &TransferLog,
        resource: &str,
        node: &str,
    ) -> Result<SlotClaim, HttpError> {
        if !log
            .claim_slot(resource, node)
            .await
            .map_err(HttpError::Log)?
        {
            tracing::info!(resource, "upload refused: slot already used");
            return Err(HttpError::Conflict);
        }
        Ok(SlotClaim {
            log: log.clone(),
            resource: resource.to_owned(),
            kept: false,
        })
    }

    /// The upload is stored and logged: the claim stays for good.
    pub(crate) fn keep(mut self) {
        self.kept = true;
    }
}

impl Drop for SlotClaim {
    fn drop(&mut self) {
        if self.kept {
            return;
        }
        let (log, resource) = (self.log.clone(), std::mem::take(&mut self.resource));
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                if let Err(e) = log.release_slot(&resource).await {
                    tracing::warn!(error = %Chain(&e), %resource, "could not release an unused slot claim; the slot stays used");
                }
            });
        }
    }
}
