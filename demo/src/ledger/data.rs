//! The Enterprise Ledger's seed data (all fake) and the in-memory state the tools read and change.

use serde::Serialize;
use serde_json::{Value, json};

/// Account lifecycle states accepted by `listAccounts` and `updateAccountStatus`.
pub const ACCOUNT_STATUSES: [&str; 3] = ["active", "frozen", "closed"];

/// One ledger account.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Account {
    /// `ACC-1001` ...
    pub account_id: String,
    /// Owner, `CUST-001` ...
    pub customer_id: String,
    /// Display name of the account holder.
    pub holder_name: String,
    /// `checking`, `savings` or `business`.
    #[serde(rename = "type")]
    pub account_type: String,
    /// Current balance in `currency`.
    pub balance: f64,
    /// ISO 4217 code, always `USD` here.
    pub currency: String,
    /// `active`, `frozen` or `closed`.
    pub status: String,
    /// When the account was opened (RFC 3339).
    pub opened_at: String,
    /// Last status change (RFC 3339).
    pub updated_at: String,
}

/// One posted transaction.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Transaction {
    /// `TXN-...`.
    pub transaction_id: String,
    /// The account it was posted to.
    pub account_id: String,
    /// `deposit`, `withdrawal`, `transfer_in`, `transfer_out`, `payment` or `fee`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Signed amount: negative leaves the account.
    pub amount: f64,
    /// ISO 4217 code.
    pub currency: String,
    /// Human-readable description.
    pub description: String,
    /// The other party, if any.
    pub counterparty: String,
    /// Posting time (RFC 3339, UTC).
    pub timestamp: String,
    /// Whether monitoring flagged it for review.
    pub flagged: bool,
    /// Why it was flagged.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub flag_reason: Option<String>,
}

/// The full audit-log entry shape, as JSON (entries are append-only).
pub type AuditEntry = Value;

/// Everything the ledger serves; the tools mutate accounts and append audit entries.
#[derive(Debug, Clone)]
pub struct LedgerData {
    /// Accounts in id order.
    pub accounts: Vec<Account>,
    /// Transactions in posting order.
    pub transactions: Vec<Transaction>,
    /// PII records keyed by `customerId` inside each object.
    pub customers: Vec<Value>,
    /// Audit entries in append order.
    pub audit: Vec<AuditEntry>,
}

impl LedgerData {
    /// The seed: 8 accounts, 14 transactions, 5 customers, 5 audit entries.
    pub fn seed() -> LedgerData {
        LedgerData {
            accounts: accounts(),
            transactions: transactions(),
            customers: customers(),
            audit: audit(),
        }
    }

    /// The account with id `id`.
    pub fn account(&self, id: &str) -> Option<&Account> {
        self.accounts.iter().find(|a| a.account_id == id)
    }

    /// The PII record of customer `id`.
    pub fn customer(&self, id: &str) -> Option<&Value> {
        self.customers
            .iter()
            .find(|c| c.get("customerId").and_then(Value::as_str) == Some(id))
    }

    /// The next free audit id, `AUD-0006` after the seed.
    pub fn next_audit_id(&self) -> String {
        format!("AUD-{:04}", self.audit.len() + 1)
    }
}

#[expect(
    clippy::too_many_arguments,
    reason = "seed-data constructors take each column"
)]
fn account(
    id: &str,
    customer: &str,
    holder: &str,
    kind: &str,
    balance: f64,
    status: &str,
    opened: &str,
    updated: &str,
) -> Account {
    Account {
        account_id: id.to_owned(),
        customer_id: customer.to_owned(),
        holder_name: holder.to_owned(),
        account_type: kind.to_owned(),
        balance,
        currency: "USD".to_owned(),
        status: status.to_owned(),
        opened_at: opened.to_owned(),
        updated_at: updated.to_owned(),
    }
}

fn accounts() -> Vec<Account> {
    vec![
        account(
            "ACC-1001",
            "CUST-001",
            "Alice Whitfield",
            "checking",
            8_412.37,
            "active",
            "2019-04-12T14:03:00Z",
            "2019-04-12T14:03:00Z",
        ),
        account(
            "ACC-1002",
            "CUST-001",
            "Alice Whitfield",
            "savings",
            52_900.00,
            "active",
            "2019-04-12T14:10:00Z",
            "2019-04-12T14:10:00Z",
        ),
        account(
            "ACC-1003",
            "CUST-002",
            "Chen Logistics LLC",
            "business",
            213_775.62,
            "active",
            "2021-09-01T09:30:00Z",
            "2021-09-01T09:30:00Z",
        ),
        account(
            "ACC-1004",
            "CUST-003",
            "Priya Raman",
            "checking",
            3_188.04,
            "active",
            "2022-01-18T16:45:00Z",
            "2022-01-18T16:45:00Z",
        ),
        account(
            "ACC-1005",
            "CUST-003",
            "Priya Raman",
            "savings",
            17_250.00,
            "active",
            "2022-01-18T16:50:00Z",
            "2022-01-18T16:50:00Z",
        ),
        account(
            "ACC-1006",
            "CUST-004",
            "Okafor Design Studio",
            "business",
            41_006.19,
            "frozen",
            "2020-06-30T11:00:00Z",
            "2026-03-02T08:15:00Z",
        ),
        account(
            "ACC-1007",
            "CUST-005",
            "Sofia Marquez",
            "checking",
            1_902.55,
            "active",
            "2023-11-05T10:20:00Z",
            "2023-11-05T10:20:00Z",
        ),
        account(
            "ACC-1008",
            "CUST-005",
            "Sofia Marquez",
            "savings",
            9_640.00,
            "active",
            "2023-11-05T10:25:00Z",
            "2023-11-05T10:25:00Z",
        ),
    ]
}

fn txn(
    id: &str,
    account: &str,
    kind: &str,
    amount: f64,
    description: &str,
    counterparty: &str,
    timestamp: &str,
) -> Transaction {
    Transaction {
        transaction_id: id.to_owned(),
        account_id: account.to_owned(),
        kind: kind.to_owned(),
        amount,
        currency: "USD".to_owned(),
        description: description.to_owned(),
        counterparty: counterparty.to_owned(),
        timestamp: timestamp.to_owned(),
        flagged: false,
        flag_reason: None,
    }
}

fn transactions() -> Vec<Transaction> {
    let mut flagged = txn(
        "TXN-50010",
        "ACC-1003",
        "withdrawal",
        -48_500.00,
        "Outgoing wire transfer",
        "Meridian Trade Partners Ltd (new beneficiary)",
        "2026-03-07T23:41:00Z",
    );
    flagged.flagged = true;
    flagged.flag_reason = Some(
        "Exceeds the $10,000 single-withdrawal threshold; wire to a beneficiary first seen today, \
         initiated outside business hours"
            .to_owned(),
    );
    vec![
        txn(
            "TXN-50001",
            "ACC-1001",
            "deposit",
            4_250.00,
            "Payroll direct deposit",
            "Northwind Health Inc.",
            "2026-02-27T08:00:00Z",
        ),
        txn(
            "TXN-50002",
            "ACC-1001",
            "payment",
            -1_875.00,
            "Rent payment",
            "Parkview Apartments",
            "2026-03-01T12:15:00Z",
        ),
        txn(
            "TXN-50003",
            "ACC-1001",
            "transfer_out",
            -500.00,
            "Transfer to savings ACC-1002",
            "ACC-1002",
            "2026-03-02T09:00:00Z",
        ),
        txn(
            "TXN-50004",
            "ACC-1002",
            "transfer_in",
            500.00,
            "Transfer from checking ACC-1001",
            "ACC-1001",
            "2026-03-02T09:00:00Z",
        ),
        txn(
            "TXN-50005",
            "ACC-1002",
            "deposit",
            38.12,
            "Monthly interest",
            "Enterprise Ledger Bank",
            "2026-03-01T00:05:00Z",
        ),
        txn(
            "TXN-50006",
            "ACC-1003",
            "deposit",
            62_300.00,
            "Customer invoice INV-2291 settled",
            "Harbor Freight Distributors",
            "2026-03-03T15:22:00Z",
        ),
        txn(
            "TXN-50007",
            "ACC-1003",
            "payment",
            -18_940.50,
            "Fuel card settlement",
            "FleetFuel Services",
            "2026-03-04T10:05:00Z",
        ),
        txn(
            "TXN-50008",
            "ACC-1003",
            "payment",
            -7_412.88,
            "Payroll run 2026-03A",
            "Gusto Payroll",
            "2026-03-05T07:30:00Z",
        ),
        txn(
            "TXN-50009",
            "ACC-1004",
            "payment",
            -86.43,
            "Card purchase",
            "Green Leaf Grocers",
            "2026-03-05T18:47:00Z",
        ),
        flagged,
        txn(
            "TXN-50011",
            "ACC-1005",
            "deposit",
            1_000.00,
            "Mobile check deposit",
            "Priya Raman",
            "2026-03-06T13:12:00Z",
        ),
        txn(
            "TXN-50012",
            "ACC-1006",
            "fee",
            -35.00,
            "Account review fee",
            "Enterprise Ledger Bank",
            "2026-03-02T08:20:00Z",
        ),
        txn(
            "TXN-50013",
            "ACC-1007",
            "payment",
            -129.99,
            "Utility bill",
            "Metro Power & Light",
            "2026-03-06T09:40:00Z",
        ),
        txn(
            "TXN-50014",
            "ACC-1008",
            "deposit",
            250.00,
            "Recurring savings deposit",
            "Sofia Marquez",
            "2026-03-07T06:00:00Z",
        ),
    ]
}

#[expect(
    clippy::too_many_arguments,
    reason = "seed-data constructors take each column"
)]
fn customer(
    id: &str,
    name: &str,
    ssn: &str,
    dob: &str,
    email: &str,
    phone: &str,
    street: &str,
    city: &str,
    state: &str,
    postal: &str,
) -> Value {
    json!({
        "customerId": id,
        "fullName": name,
        "ssn": ssn,
        "dateOfBirth": dob,
        "email": email,
        "phone": phone,
        "address": {
            "street": street,
            "city": city,
            "state": state,
            "postalCode": postal,
            "country": "US",
        },
        "note": "Synthetic demo record: not a real person.",
    })
}

/// SSNs use the 900 area (never issued as SSNs); phones use the 555-01xx fictional range.
fn customers() -> Vec<Value> {
    vec![
        customer(
            "CUST-001",
            "Alice Whitfield",
            "900-12-4417",
            "1986-07-22",
            "alice.whitfield@example.com",
            "+1-312-555-0142",
            "1420 W Belmont Ave Apt 3B",
            "Chicago",
            "IL",
            "60657",
        ),
        customer(
            "CUST-002",
            "Marcus Chen",
            "900-48-2290",
            "1974-02-03",
            "marcus@chenlogistics.example",
            "+1-206-555-0177",
            "88 Harbor Way Suite 400",
            "Seattle",
            "WA",
            "98104",
        ),
        customer(
            "CUST-003",
            "Priya Raman",
            "900-71-0385",
            "1993-11-14",
            "priya.raman@example.org",
            "+1-512-555-0108",
            "702 Barton Springs Rd",
            "Austin",
            "TX",
            "78704",
        ),
        customer(
            "CUST-004",
            "Daniel Okafor",
            "900-33-9152",
            "1981-05-29",
            "daniel@okafordesign.example",
            "+1-404-555-0163",
            "55 Peachtree Pl NE",
            "Atlanta",
            "GA",
            "30309",
        ),
        customer(
            "CUST-005",
            "Sofia Marquez",
            "900-86-5521",
            "1998-09-08",
            "sofia.marquez@example.net",
            "+1-619-555-0121",
            "3310 Adams Ave",
            "San Diego",
            "CA",
            "92116",
        ),
    ]
}

fn audit() -> Vec<AuditEntry> {
    vec![
        json!({
            "auditId": "AUD-0001",
            "timestamp": "2026-03-02T08:15:00Z",
            "actor": "compliance.bot@orchestrator.lab",
            "action": "account.status_changed",
            "accountId": "ACC-1006",
            "details": { "from": "active", "to": "frozen", "reason": "KYC documents expired" },
        }),
        json!({
            "auditId": "AUD-0002",
            "timestamp": "2026-03-02T08:20:00Z",
            "actor": "system",
            "action": "fee.assessed",
            "accountId": "ACC-1006",
            "details": { "transactionId": "TXN-50012", "amount": -35.00 },
        }),
        json!({
            "auditId": "AUD-0003",
            "timestamp": "2026-03-05T14:02:00Z",
            "actor": "sarah.connor@orchestrator.lab",
            "action": "pii.viewed",
            "accountId": "ACC-1004",
            "details": { "customerId": "CUST-003", "purpose": "address verification" },
        }),
        json!({
            "auditId": "AUD-0004",
            "timestamp": "2026-03-07T23:41:05Z",
            "actor": "txn-monitor",
            "action": "transaction.flagged",
            "accountId": "ACC-1003",
            "details": { "transactionId": "TXN-50010", "amount": -48_500.00, "rule": "large-withdrawal" },
        }),
        json!({
            "auditId": "AUD-0005",
            "timestamp": "2026-03-08T09:12:00Z",
            "actor": "john.mcclane@orchestrator.lab",
            "action": "case.opened",
            "accountId": "ACC-1003",
            "details": { "caseId": "CASE-7731", "summary": "Review flagged wire TXN-50010" },
        }),
    ]
}
