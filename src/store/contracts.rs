//! Contracts read back from the `contracts` table, decoded here and only here
//! (through [`ContractTerms::from_stored`]) into the terms billing applies. A
//! contract the table lacks or that cannot be read is
//! [`StoreError::Contract`]: nothing is confirmed, replayed or clawed back under
//! another contract in its place.

use super::{col, StoreError};
use crate::contract::{ContractTerms, StoredContractError};
use sqlx::any::AnyRow;

/// The contract an undecided resolution was first decided under, when that is
/// not the tenant's current one: the resolution keeps it.
#[derive(Debug, Clone, PartialEq)]
pub struct PinnedContract {
    pub seq: u32,
    pub hash: String,
    pub version: String,
    pub terms: ContractTerms,
}

/// The terms stored under `hash` (`None`: no such row).
pub(super) fn decode(hash: &str, terms: Option<&str>) -> Result<ContractTerms, StoreError> {
    let terms = terms.ok_or_else(|| StoredContractError::Missing {
        hash: hash.to_string(),
    })?;
    Ok(ContractTerms::from_stored(hash, terms)?)
}

/// A row of `seq`, `contract_hash`, `version` and `terms` (the last two NULL
/// when the contract is missing: a LEFT JOIN).
pub(super) fn pinned_from_row(r: &AnyRow) -> Result<PinnedContract, StoreError> {
    let seq: i64 = col(r, "seq")?;
    let hash: String = col(r, "contract_hash")?;
    let terms: Option<String> = col(r, "terms")?;
    let terms = decode(&hash, terms.as_deref())?;
    Ok(PinnedContract {
        seq: u32::try_from(seq).map_err(|_| StoreError::corrupt("decision seq out of range"))?,
        // The contract's row is there (its terms were): its version is not NULL.
        version: col(r, "version")?,
        hash,
        terms,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_or_unreadable_contract_is_an_error_never_a_default() {
        let stored = serde_json::to_string(&ContractTerms::default()).expect("json");
        assert_eq!(
            decode("c0ffee", Some(&stored)).expect("stored terms"),
            ContractTerms::default()
        );
        for (terms, words) in [
            (None, "contract c0ffee is not in the contracts table"),
            (
                Some("{\"clawback\": 30}"),
                "stored contract c0ffee cannot be read",
            ),
        ] {
            let err = decode("c0ffee", terms).expect_err("no terms");
            assert!(
                matches!(err, StoreError::Contract(_)) && !err.is_transient(),
                "{err:?}"
            );
            assert!(
                err.to_string()
                    .starts_with(&format!("unexpected data in the database: {words}")),
                "{err}"
            );
        }
    }
}
