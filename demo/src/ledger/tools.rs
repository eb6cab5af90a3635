//! The ledger's six MCP tools: catalogue (names, scopes, input schemas) and handlers over [`LedgerData`].

use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

use super::data::{ACCOUNT_STATUSES, LedgerData};

/// Every tool and the scope its delegation token must carry, in `tools/list` order.
pub const TOOL_SCOPES: [(&str, &str); 6] = [
    ("listAccounts", "ledger:ListAccounts"),
    ("getAccount", "ledger:GetAccount"),
    ("getTransactions", "ledger:ListTransactions"),
    ("updateAccountStatus", "ledger:UpdateAccount"),
    ("getCustomerPII", "ledger:ReadPII"),
    ("getAuditLog", "ledger:ReadAudit"),
];

/// The scope tool `name` requires, or `None` if there is no such tool.
pub fn required_scope(name: &str) -> Option<&'static str> {
    TOOL_SCOPES
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, s)| *s)
}

fn account_id_prop() -> Value {
    json!({
        "type": "string",
        "description": "Ledger account identifier, e.g. \"ACC-1003\".",
        "pattern": "^ACC-[0-9]{4}$",
    })
}

fn limit_prop(default: u64) -> Value {
    json!({
        "type": "integer",
        "description": format!("Maximum number of entries to return, newest first (default {default}, max 100)."),
        "minimum": 1,
        "maximum": 100,
        "default": default,
    })
}

fn status_prop(description: &str) -> Value {
    json!({ "type": "string", "enum": ACCOUNT_STATUSES, "description": description })
}

/// The `tools/list` entries, with input schemas and annotations.
pub fn catalogue() -> Vec<Value> {
    let entry = |name: &str, title: &str, description: &str, schema: Value, read_only: bool| {
        let scope = required_scope(name).unwrap_or_default();
        json!({
            "name": name,
            "title": title,
            "description": format!("{description} Requires scope {scope}."),
            "inputSchema": schema,
            "annotations": {
                "title": title,
                "readOnlyHint": read_only,
                "destructiveHint": false,
                "idempotentHint": true,
                "openWorldHint": false,
            },
        })
    };
    vec![
        entry(
            "listAccounts",
            "List accounts",
            "Lists ledger accounts with holder, type, balance and status, optionally filtered by status.",
            json!({
                "type": "object",
                "properties": { "status": status_prop("Only return accounts in this status.") },
                "additionalProperties": false,
            }),
            true,
        ),
        entry(
            "getAccount",
            "Get account",
            "Returns one account's details.",
            json!({
                "type": "object",
                "properties": { "accountId": account_id_prop() },
                "required": ["accountId"],
                "additionalProperties": false,
            }),
            true,
        ),
        entry(
            "getTransactions",
            "Get transactions",
            "Returns an account's transactions, newest first, including fraud-monitoring flags.",
            json!({
                "type": "object",
                "properties": { "accountId": account_id_prop(), "limit": limit_prop(10) },
                "required": ["accountId"],
                "additionalProperties": false,
            }),
            true,
        ),
        entry(
            "updateAccountStatus",
            "Update account status",
            "Sets an account's status (active, frozen or closed) and records the change in the audit log.",
            json!({
                "type": "object",
                "properties": {
                    "accountId": account_id_prop(),
                    "status": status_prop("The new status."),
                    "reason": { "type": "string", "description": "Why the status changes; kept in the audit log." },
                },
                "required": ["accountId", "status"],
                "additionalProperties": false,
            }),
            false,
        ),
        entry(
            "getCustomerPII",
            "Get customer PII",
            "Returns a customer's personal data: full name, SSN, date of birth, contact details and address (synthetic demo data).",
            json!({
                "type": "object",
                "properties": {
                    "customerId": {
                        "type": "string",
                        "description": "Customer identifier, e.g. \"CUST-002\".",
                        "pattern": "^CUST-[0-9]{3}$",
                    },
                },
                "required": ["customerId"],
                "additionalProperties": false,
            }),
            true,
        ),
        entry(
            "getAuditLog",
            "Get audit log",
            "Returns audit-log entries, newest first, optionally for one account.",
            json!({
                "type": "object",
                "properties": { "accountId": account_id_prop(), "limit": limit_prop(20) },
                "additionalProperties": false,
            }),
            true,
        ),
    ]
}

/// Who is calling, for audit entries: the user and the acting chain.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The token's `sub` (the human on whose behalf the gateway acts).
    pub sub: String,
    /// The `act` chain, current actor first.
    pub act: Vec<String>,
}

/// A successful tool result: pretty JSON text plus `structuredContent`.
fn ok(structured: Value) -> Value {
    let text = serde_json::to_string_pretty(&structured).unwrap_or_default();
    json!({ "content": [ { "type": "text", "text": text } ], "structuredContent": structured })
}

/// A tool-level error the model can read (`isError: true`).
fn tool_error(message: &str) -> Value {
    json!({ "content": [ { "type": "text", "text": message } ], "isError": true })
}

fn str_arg<'a>(args: &'a Value, name: &str) -> Result<Option<&'a str>, Value> {
    match args.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.as_str())),
        Some(_) => Err(tool_error(&format!(
            "Invalid arguments: {name} must be a string"
        ))),
    }
}

fn required_str<'a>(args: &'a Value, name: &str) -> Result<&'a str, Value> {
    str_arg(args, name)?
        .ok_or_else(|| tool_error(&format!("Invalid arguments: {name} is required")))
}

fn status_arg<'a>(args: &'a Value, name: &str) -> Result<Option<&'a str>, Value> {
    match str_arg(args, name)? {
        Some(s) if !ACCOUNT_STATUSES.contains(&s) => Err(tool_error(&format!(
            "Invalid arguments: {name} must be one of active, frozen, closed"
        ))),
        other => Ok(other),
    }
}

fn limit_arg(args: &Value, default: usize) -> Result<usize, Value> {
    match args.get("limit") {
        None | Some(Value::Null) => Ok(default),
        Some(v) => match v.as_u64() {
            Some(n) if n >= 1 => Ok(usize::try_from(n.min(100)).unwrap_or(100)),
            _ => Err(tool_error(
                "Invalid arguments: limit must be an integer between 1 and 100",
            )),
        },
    }
}

/// Runs tool `name` (already authorized) with `args`; `None` if the tool does not exist.
pub fn call(data: &mut LedgerData, name: &str, args: &Value, caller: &Caller) -> Option<Value> {
    let result = match name {
        "listAccounts" => list_accounts(data, args),
        "getAccount" => get_account(data, args),
        "getTransactions" => get_transactions(data, args),
        "updateAccountStatus" => update_account_status(data, args, caller),
        "getCustomerPII" => get_customer_pii(data, args),
        "getAuditLog" => get_audit_log(data, args),
        _ => return None,
    };
    Some(result.unwrap_or_else(|e| e))
}

fn list_accounts(data: &LedgerData, args: &Value) -> Result<Value, Value> {
    let status = status_arg(args, "status")?;
    let accounts: Vec<_> = data
        .accounts
        .iter()
        .filter(|a| status.is_none_or(|s| a.status == s))
        .collect();
    Ok(ok(json!({ "count": accounts.len(), "accounts": accounts })))
}

fn get_account(data: &LedgerData, args: &Value) -> Result<Value, Value> {
    let id = required_str(args, "accountId")?;
    let account = data
        .account(id)
        .ok_or_else(|| tool_error("Account not found"))?;
    Ok(ok(json!(account)))
}

fn get_transactions(data: &LedgerData, args: &Value) -> Result<Value, Value> {
    let id = required_str(args, "accountId")?;
    let limit = limit_arg(args, 10)?;
    if data.account(id).is_none() {
        return Err(tool_error("Account not found"));
    }
    let mut txns: Vec<_> = data
        .transactions
        .iter()
        .filter(|t| t.account_id == id)
        .collect();
    // RFC 3339 UTC timestamps sort lexically; ties keep the later-posted first.
    txns.reverse();
    txns.sort_by(|a, b| b.timestamp.cmp(&a.timestamp));
    txns.truncate(limit);
    let flagged = txns.iter().filter(|t| t.flagged).count();
    Ok(ok(json!({
        "accountId": id,
        "count": txns.len(),
        "flaggedCount": flagged,
        "transactions": txns,
    })))
}

fn update_account_status(
    data: &mut LedgerData,
    args: &Value,
    caller: &Caller,
) -> Result<Value, Value> {
    let id = required_str(args, "accountId")?;
    let status = status_arg(args, "status")?
        .ok_or_else(|| tool_error("Invalid arguments: status is required"))?;
    let reason = str_arg(args, "reason")?;
    let audit_id = data.next_audit_id();
    let now = rfc3339_now();
    let account = data
        .accounts
        .iter_mut()
        .find(|a| a.account_id == id)
        .ok_or_else(|| tool_error("Account not found"))?;
    let previous = std::mem::replace(&mut account.status, status.to_owned());
    account.updated_at.clone_from(&now);
    let updated = json!(account);
    data.audit.push(json!({
        "auditId": audit_id,
        "timestamp": now,
        "actor": caller.sub,
        "actingParty": caller.act,
        "action": "account.status_changed",
        "accountId": id,
        "details": { "from": previous, "to": status, "reason": reason },
    }));
    Ok(ok(
        json!({ "account": updated, "previousStatus": previous, "auditId": audit_id }),
    ))
}

fn get_customer_pii(data: &LedgerData, args: &Value) -> Result<Value, Value> {
    let id = required_str(args, "customerId")?;
    let record = data
        .customer(id)
        .ok_or_else(|| tool_error("Customer not found"))?;
    Ok(ok(record.clone()))
}

fn get_audit_log(data: &LedgerData, args: &Value) -> Result<Value, Value> {
    let account = str_arg(args, "accountId")?;
    let limit = limit_arg(args, 20)?;
    let entries: Vec<_> = data
        .audit
        .iter()
        .rev()
        .filter(|e| account.is_none_or(|id| e.get("accountId").and_then(Value::as_str) == Some(id)))
        .take(limit)
        .collect();
    Ok(ok(json!({ "count": entries.len(), "entries": entries })))
}

/// The current UTC time as `YYYY-MM-DDTHH:MM:SSZ`.
fn rfc3339_now() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let days = i64::try_from(secs / 86_400).unwrap_or(0);
    let rem = secs % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3_600,
        rem % 3_600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_catalogued_tool_has_a_scope_and_a_handler() {
        let caller = Caller {
            sub: "t".into(),
            act: vec![],
        };
        for tool in catalogue() {
            let name = tool["name"].as_str().unwrap();
            assert!(required_scope(name).is_some());
            assert!(tool["inputSchema"]["properties"].is_object());
            let mut data = LedgerData::seed();
            assert!(call(&mut data, name, &json!({}), &caller).is_some());
        }
        assert!(call(&mut LedgerData::seed(), "nope", &json!({}), &caller).is_none());
    }

    #[test]
    fn now_is_rfc3339() {
        let now = rfc3339_now();
        assert_eq!(now.len(), 20, "{now}");
        assert!(now.starts_with("20") && now.ends_with('Z'), "{now}");
    }
}
