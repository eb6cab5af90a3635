//! Policy in the control plane: load the `.cedar` files and compile them with the config's
//! rules against the current tool catalog (again when the catalog changes). File edits
//! reload the whole configuration (`reload.rs`), which refuses a policy that does not
//! compile and keeps the running one.

use std::path::PathBuf;
use std::sync::Arc;

use dataplane::snapshot::{ToolTable, Upstream};
use serde_json::Value;
use warden_policy::{Engine, PolicyConfig, PolicyError, PolicyFile, ToolInfo};

/// The compiled policy and what it was compiled from.
#[derive(Debug, Default)]
pub struct PolicyState {
    pub cfg: PolicyConfig,
    files: Vec<(PathBuf, String)>,
    /// The `policy.shadow` files, read with the live ones.
    shadow_files: Vec<(PathBuf, String)>,
    /// The shadow policy compiled for the same catalog (evaluated beside, never enforced).
    shadow: Option<Arc<Engine>>,
    /// Policies supplied in code (the demo), beside the files.
    pub extra: Vec<PolicyFile>,
    engine: Option<Arc<Engine>>,
    /// The catalog the engine was compiled for: its tools, then the upstreams serving
    /// items (after an empty entry, which no tool name is).
    catalog: Vec<String>,
    generation: u64,
    /// Set when the files changed and must be recompiled.
    dirty: bool,
    /// Operator tags: upstream name → (upstream tool name → tags).
    pub tags: std::collections::HashMap<String, std::collections::HashMap<String, Vec<String>>>,
}

impl PolicyState {
    /// Read the configured files (file I/O happens here, in the control plane).
    pub fn load(cfg: PolicyConfig, extra: Vec<PolicyFile>) -> Result<PolicyState, PolicyError> {
        let read = |paths: &[PathBuf]| -> Result<Vec<(PathBuf, String)>, PolicyError> {
            paths
                .iter()
                .map(|p| {
                    let text = std::fs::read_to_string(p).map_err(|e| PolicyError {
                        file: p.display().to_string(),
                        line: None,
                        message: e.to_string(),
                    })?;
                    Ok((p.clone(), text))
                })
                .collect()
        };
        let files = read(&cfg.files)?;
        let shadow_files = match &cfg.shadow {
            Some(s) => read(&s.files)?,
            None => Vec::new(),
        };
        Ok(PolicyState {
            cfg,
            files,
            shadow_files,
            extra,
            dirty: true,
            ..Default::default()
        })
    }

    fn policy_files(&self) -> Vec<PolicyFile> {
        let mut v = Self::as_files(&self.files);
        v.extend(self.extra.iter().cloned());
        v
    }

    /// The shadow policy compiled with the live one, if `policy.shadow` is configured.
    pub fn shadow(&self) -> Option<Arc<Engine>> {
        self.shadow.clone()
    }

    fn as_files(files: &[(PathBuf, String)]) -> Vec<PolicyFile> {
        files
            .iter()
            .map(|(p, t)| PolicyFile {
                name: p.display().to_string(),
                text: t.clone(),
            })
            .collect()
    }

    /// The state for a reloaded configuration: files read afresh, nothing compiled yet, and
    /// the generation counter carried on so shards' decision caches (keyed by generation)
    /// never confuse the new policy with the old.
    pub fn successor(
        &self,
        cfg: PolicyConfig,
        tags: std::collections::HashMap<String, std::collections::HashMap<String, Vec<String>>>,
    ) -> Result<PolicyState, PolicyError> {
        let mut next = PolicyState::load(cfg, self.extra.clone())?;
        next.generation = self.generation;
        next.tags = tags;
        Ok(next)
    }

    /// The engine for this catalog (its tools, and `item_upstreams`: the upstreams serving
    /// resources or prompts, which get upstream slices even when they list no tool):
    /// recompiled when the catalog or the files changed. A failed recompilation keeps the
    /// previous engine (and is counted); with none, `Err`.
    pub fn engine_for(
        &mut self,
        upstreams: &[Arc<Upstream>],
        tools: &ToolTable,
        item_upstreams: &[String],
    ) -> Result<Arc<Engine>, PolicyError> {
        let mut catalog: Vec<String> = tools.order.clone();
        catalog.push(String::new());
        catalog.extend(item_upstreams.iter().cloned());
        if let Some(e) = &self.engine
            && !self.dirty
            && catalog == self.catalog
        {
            return Ok(e.clone());
        }
        let infos: Vec<ToolInfo> = tools
            .order
            .iter()
            .filter_map(|name| {
                let r = tools.routes.get(name)?;
                let def: Value = serde_json::from_str(r.definition.get()).unwrap_or_default();
                Some(ToolInfo {
                    name: name.clone(),
                    upstream: upstreams
                        .get(r.upstream)
                        .map(|u| u.name.clone())
                        .unwrap_or_default(),
                    upstream_name: r.upstream_name.clone(),
                    annotations: def.get("annotations").cloned().unwrap_or(Value::Null),
                    tags: upstreams
                        .get(r.upstream)
                        .and_then(|u| self.tags.get(&u.name))
                        .and_then(|m| m.get(&r.upstream_name))
                        .cloned()
                        .unwrap_or_default(),
                    input_schema: def.get("inputSchema").cloned().unwrap_or(Value::Null),
                })
            })
            .collect();
        let generation = self.generation + 1;
        let compile = |cfg: &PolicyConfig, files: &[PolicyFile]| {
            warden_policy::compile_catalog(cfg, files, &infos, item_upstreams, generation)
        };
        let compiled =
            compile(&self.cfg, &self.policy_files()).and_then(|live| match &self.cfg.shadow {
                Some(shadow) => {
                    let files = Self::as_files(&self.shadow_files);
                    compile(&shadow.as_policy(), &files)
                        .map(|s| (live, Some(Arc::new(s))))
                        .map_err(|mut e| {
                            e.message = format!("policy.shadow: {}", e.message);
                            e
                        })
                }
                None => Ok((live, None)),
            });
        match compiled {
            Ok((e, shadow)) => {
                let e = Arc::new(e);
                if let Some(old) = &self.engine {
                    log_changes(old, &e);
                }
                self.shadow = shadow;
                self.generation = generation;
                self.engine = Some(e.clone());
                self.catalog = catalog;
                self.dirty = false;
                metrics::gauge!("warden_policy_generation").set(generation as f64);
                tracing::info!(generation, tools = infos.len(), "Policy compiled");
                Ok(e)
            }
            Err(err) => {
                metrics::counter!("warden_policy_reload_failures_total").increment(1);
                self.dirty = false;
                match &self.engine {
                    Some(old) => {
                        tracing::error!(error = %err, "Policy refused; the previous policy stays active");
                        // Keep serving the old policy; the catalog change it missed is retried
                        // with the next change.
                        self.catalog = catalog;
                        Ok(old.clone())
                    }
                    None => Err(err),
                }
            }
        }
    }
}

/// Say which tools a recompiled policy decides differently for (their slices changed).
fn log_changes(old: &Engine, new: &Engine) {
    let changed = new.changed_tools(old);
    if changed.is_empty() {
        tracing::info!("Policy recompiled; no tool's policies changed");
    } else {
        metrics::counter!("warden_policy_changed_tools_total").increment(changed.len() as u64);
        tracing::info!(
            count = changed.len(),
            tools = %changed.join(", "),
            "Policy changed for these tools; their decisions may differ from now on"
        );
    }
}
