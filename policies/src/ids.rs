//! Entity type names, parsed once per compile, and entity uids built from them.

use std::str::FromStr;

use cedar_policy::{EntityId, EntityTypeName, EntityUid};

use crate::config::PolicyError;

/// The schema's entity types (parsing a type name is fallible in Cedar's API, so it is done once).
#[derive(Debug, Clone)]
pub(crate) struct Types {
    pub(crate) user: EntityTypeName,
    pub(crate) client: EntityTypeName,
    pub(crate) group: EntityTypeName,
    pub(crate) upstream: EntityTypeName,
    pub(crate) tag: EntityTypeName,
    pub(crate) tool: EntityTypeName,
    pub(crate) action: EntityTypeName,
}

impl Types {
    pub(crate) fn new() -> Result<Self, PolicyError> {
        let t = |name: &str| {
            EntityTypeName::from_str(name)
                .map_err(|e| PolicyError::new("<schema>", None, format!("entity type {name}: {e}")))
        };
        Ok(Self {
            user: t("User")?,
            client: t("Client")?,
            group: t("Group")?,
            upstream: t("Upstream")?,
            tag: t("Tag")?,
            tool: t("Tool")?,
            action: t("Action")?,
        })
    }
}

pub(crate) fn uid(ty: &EntityTypeName, id: &str) -> EntityUid {
    EntityUid::from_type_name_and_id(ty.clone(), EntityId::new(id))
}
