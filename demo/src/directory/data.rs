//! The Employee Directory's in-memory data: ten seeded employees, filters, paging and input validation.

use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Deserializer, Serialize};

/// The departments an employee can belong to.
pub const DEPARTMENTS: [&str; 5] = ["Engineering", "Finance", "Compliance", "Operations", "HR"];
/// Longest accepted text field, in characters.
pub const MAX_FIELD_CHARS: usize = 100;
/// Default and maximum page size of `listEmployees`.
pub const DEFAULT_LIMIT: usize = 20;
/// Largest `limit` accepted by `listEmployees`.
pub const MAX_LIMIT: usize = 100;

/// `active` or `inactive` (soft-deleted).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Currently employed.
    Active,
    /// Deactivated; kept for the record.
    Inactive,
}

impl Status {
    /// Parses `active` / `inactive`.
    pub fn parse(s: &str) -> Option<Status> {
        match s {
            "active" => Some(Status::Active),
            "inactive" => Some(Status::Inactive),
            _ => None,
        }
    }
}

/// One employee, as the API returns it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Employee {
    /// `E` followed by four digits, e.g. `E1001`.
    pub id: String,
    /// Given name.
    pub first_name: String,
    /// Family name.
    pub last_name: String,
    /// Work email, unique.
    pub email: String,
    /// One of [`DEPARTMENTS`].
    pub department: String,
    /// Job title.
    pub title: String,
    /// The manager's id; `null` at the top of the chain.
    pub manager_id: Option<String>,
    /// `YYYY-MM-DD`.
    pub hire_date: String,
    /// Active or inactive.
    pub status: Status,
}

/// `POST /employees` body.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NewEmployee {
    first_name: String,
    last_name: String,
    email: String,
    department: String,
    title: String,
    #[serde(default)]
    manager_id: Option<String>,
}

/// `PUT /employees/{id}` body: every field optional, `managerId: null` clears the manager.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EmployeeUpdate {
    #[serde(default)]
    first_name: Option<String>,
    #[serde(default)]
    last_name: Option<String>,
    #[serde(default)]
    email: Option<String>,
    #[serde(default)]
    department: Option<String>,
    #[serde(default)]
    title: Option<String>,
    #[serde(default, deserialize_with = "present")]
    manager_id: Option<Option<String>>,
    #[serde(default)]
    status: Option<Status>,
}

/// Distinguishes a present `null` (`Some(None)`) from an absent field (`None`).
fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Option<String>>, D::Error> {
    Option::<String>::deserialize(d).map(Some)
}

/// Why a change was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DataError {
    /// `400`: the input is invalid.
    Invalid(String),
    /// `404`: no such employee.
    NotFound(String),
    /// `409`: the email is taken.
    Conflict(String),
}

/// `listEmployees` filters and paging, already validated.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    /// Exact department name (case-insensitive).
    pub department: Option<String>,
    /// Only this status.
    pub status: Option<Status>,
    /// Case-insensitive substring of "first last".
    pub q: Option<String>,
    /// Page size, 1–100.
    pub limit: usize,
    /// Items skipped.
    pub offset: usize,
}

/// One page of employees.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Page {
    /// The employees on this page, by id.
    pub items: Vec<Employee>,
    /// How many match the filters, across all pages.
    pub total: usize,
    /// The page size used.
    pub limit: usize,
    /// The offset used.
    pub offset: usize,
}

/// One department with its headcount.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Department {
    /// Department name.
    pub name: String,
    /// Active employees.
    pub headcount: usize,
    /// Active and inactive employees.
    pub total_employees: usize,
}

/// First, last, department, title, manager, hire date, status.
type SeedRow = (
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    Option<&'static str>,
    &'static str,
    Status,
);

/// All employees, by id.
#[derive(Debug, Clone)]
pub struct DirectoryData {
    employees: BTreeMap<String, Employee>,
    next_id: u32,
}

impl DirectoryData {
    /// The ten seeded employees (`E1001`–`E1010`; `E1010` is inactive).
    pub fn seed() -> DirectoryData {
        #[rustfmt::skip]
        let rows: [SeedRow; 10] = [
            ("Margaret", "Okafor", "Operations", "Chief Operating Officer", None, "2016-03-14", Status::Active),
            ("David", "Chen", "Engineering", "VP of Engineering", Some("E1001"), "2017-08-01", Status::Active),
            ("Priya", "Raman", "Engineering", "Senior Software Engineer", Some("E1002"), "2019-02-11", Status::Active),
            ("Marcus", "Webb", "Engineering", "Software Engineer", Some("E1002"), "2022-06-20", Status::Active),
            ("Elena", "Petrova", "Finance", "Financial Controller", Some("E1001"), "2018-01-08", Status::Active),
            ("James", "O'Neill", "Finance", "Financial Analyst", Some("E1005"), "2021-09-13", Status::Active),
            ("Aisha", "Bello", "Compliance", "Chief Compliance Officer", Some("E1001"), "2017-11-27", Status::Active),
            ("Tomás", "Alvarez", "Compliance", "Compliance Analyst", Some("E1007"), "2023-04-03", Status::Active),
            ("Hannah", "Schmidt", "HR", "HR Business Partner", Some("E1001"), "2020-05-18", Status::Active),
            ("Robert", "Kim", "Operations", "Operations Manager", Some("E1001"), "2019-10-07", Status::Inactive),
        ];
        let mut employees = BTreeMap::new();
        for (i, (first, last, department, title, manager, hired, status)) in
            rows.into_iter().enumerate()
        {
            let id = format!("E{}", 1001 + i);
            employees.insert(
                id.clone(),
                Employee {
                    id,
                    first_name: first.to_owned(),
                    last_name: last.to_owned(),
                    email: email_for(first, last),
                    department: department.to_owned(),
                    title: title.to_owned(),
                    manager_id: manager.map(str::to_owned),
                    hire_date: hired.to_owned(),
                    status,
                },
            );
        }
        DirectoryData {
            employees,
            next_id: 1011,
        }
    }

    /// The employees matching `filter`, one page of them.
    pub fn list(&self, filter: &Filter) -> Page {
        let q = filter.q.as_deref().map(str::to_lowercase);
        let matching: Vec<&Employee> = self
            .employees
            .values()
            .filter(|e| {
                filter
                    .department
                    .as_deref()
                    .is_none_or(|d| e.department.eq_ignore_ascii_case(d))
            })
            .filter(|e| filter.status.is_none_or(|s| e.status == s))
            .filter(|e| {
                q.as_deref().is_none_or(|q| {
                    format!("{} {}", e.first_name, e.last_name)
                        .to_lowercase()
                        .contains(q)
                })
            })
            .collect();
        Page {
            total: matching.len(),
            items: matching
                .into_iter()
                .skip(filter.offset)
                .take(filter.limit)
                .cloned()
                .collect(),
            limit: filter.limit,
            offset: filter.offset,
        }
    }

    /// The employee `id`.
    pub fn get(&self, id: &str) -> Result<Employee, DataError> {
        self.employees.get(id).cloned().ok_or_else(|| not_found(id))
    }

    /// The employees whose manager is `id` (which must exist).
    pub fn reports(&self, id: &str) -> Result<Vec<Employee>, DataError> {
        self.get(id)?;
        Ok(self
            .employees
            .values()
            .filter(|e| e.manager_id.as_deref() == Some(id))
            .cloned()
            .collect())
    }

    /// Every department with its headcounts, in [`DEPARTMENTS`] order.
    pub fn departments(&self) -> Vec<Department> {
        DEPARTMENTS
            .iter()
            .map(|name| {
                let members = self.employees.values().filter(|e| e.department == *name);
                Department {
                    name: (*name).to_owned(),
                    headcount: members
                        .clone()
                        .filter(|e| e.status == Status::Active)
                        .count(),
                    total_employees: members.count(),
                }
            })
            .collect()
    }

    /// Adds an employee (active, hired today) and returns it.
    pub fn create(&mut self, new: NewEmployee) -> Result<Employee, DataError> {
        let first_name = text("firstName", &new.first_name)?;
        let last_name = text("lastName", &new.last_name)?;
        let email = self.email(&new.email, None)?;
        let department = department(&new.department)?;
        let title = text("title", &new.title)?;
        let id = format!("E{}", self.next_id);
        let manager_id = match new.manager_id {
            Some(m) => Some(self.manager(&id, &m)?),
            None => None,
        };
        self.next_id += 1;
        let employee = Employee {
            id: id.clone(),
            first_name,
            last_name,
            email,
            department,
            title,
            manager_id,
            hire_date: today(),
            status: Status::Active,
        };
        self.employees.insert(id, employee.clone());
        Ok(employee)
    }

    /// Applies `update` to employee `id` (all fields validated before anything changes).
    pub fn update(&mut self, id: &str, update: EmployeeUpdate) -> Result<Employee, DataError> {
        let mut e = self.get(id)?;
        let EmployeeUpdate {
            first_name,
            last_name,
            email,
            department: dept,
            title,
            manager_id,
            status,
        } = update;
        let changes = [
            first_name.is_some(),
            last_name.is_some(),
            email.is_some(),
            dept.is_some(),
            title.is_some(),
            manager_id.is_some(),
            status.is_some(),
        ];
        if !changes.contains(&true) {
            return Err(DataError::Invalid(
                "the update must change at least one field".to_owned(),
            ));
        }
        if let Some(v) = first_name {
            e.first_name = text("firstName", &v)?;
        }
        if let Some(v) = last_name {
            e.last_name = text("lastName", &v)?;
        }
        if let Some(v) = email {
            e.email = self.email(&v, Some(id))?;
        }
        if let Some(v) = dept {
            e.department = department(&v)?;
        }
        if let Some(v) = title {
            e.title = text("title", &v)?;
        }
        if let Some(m) = manager_id {
            e.manager_id = match m {
                Some(m) => Some(self.manager(id, &m)?),
                None => None,
            };
        }
        if let Some(s) = status {
            e.status = s;
        }
        self.employees.insert(id.to_owned(), e.clone());
        Ok(e)
    }

    /// Soft delete: marks `id` inactive (idempotent) and returns it.
    pub fn deactivate(&mut self, id: &str) -> Result<Employee, DataError> {
        let e = self.employees.get_mut(id).ok_or_else(|| not_found(id))?;
        e.status = Status::Inactive;
        Ok(e.clone())
    }

    /// A valid, unused (except by `owner`) email, lower-cased.
    fn email(&self, raw: &str, owner: Option<&str>) -> Result<String, DataError> {
        let email = text("email", raw)?.to_lowercase();
        let valid = email.split_once('@').is_some_and(|(local, domain)| {
            !local.is_empty()
                && domain.contains('.')
                && !domain.starts_with('.')
                && !domain.ends_with('.')
                && !domain.contains('@')
        }) && !email.chars().any(char::is_whitespace);
        if !valid {
            return Err(DataError::Invalid(format!(
                "email {email:?} is not a valid address"
            )));
        }
        let taken = self
            .employees
            .values()
            .any(|e| e.email == email && Some(e.id.as_str()) != owner);
        if taken {
            return Err(DataError::Conflict(format!(
                "email {email} is already in use"
            )));
        }
        Ok(email)
    }

    /// A valid manager for `id`: existing, not `id` itself, and not one of `id`'s reports.
    fn manager(&self, id: &str, manager: &str) -> Result<String, DataError> {
        if !self.employees.contains_key(manager) {
            return Err(DataError::Invalid(format!(
                "managerId {manager:?} is not an employee"
            )));
        }
        let mut cursor = Some(manager.to_owned());
        let mut steps = 0;
        while let Some(current) = cursor {
            if current == id || steps > self.employees.len() {
                return Err(DataError::Invalid(format!(
                    "managerId {manager:?} would make a reporting cycle"
                )));
            }
            steps += 1;
            cursor = self
                .employees
                .get(&current)
                .and_then(|e| e.manager_id.clone());
        }
        Ok(manager.to_owned())
    }
}

fn not_found(id: &str) -> DataError {
    DataError::NotFound(format!("no employee with id {id:?}"))
}

/// A trimmed, non-empty field of at most [`MAX_FIELD_CHARS`] characters without control characters.
fn text(field: &str, raw: &str) -> Result<String, DataError> {
    let v = raw.trim();
    if v.is_empty() {
        return Err(DataError::Invalid(format!("{field} must not be empty")));
    }
    if v.chars().count() > MAX_FIELD_CHARS {
        return Err(DataError::Invalid(format!(
            "{field} must be at most {MAX_FIELD_CHARS} characters"
        )));
    }
    if v.chars().any(char::is_control) {
        return Err(DataError::Invalid(format!(
            "{field} must not contain control characters"
        )));
    }
    Ok(v.to_owned())
}

/// One of [`DEPARTMENTS`] (case-insensitive), in its canonical spelling.
fn department(raw: &str) -> Result<String, DataError> {
    DEPARTMENTS
        .iter()
        .find(|d| d.eq_ignore_ascii_case(raw.trim()))
        .map(|d| (*d).to_owned())
        .ok_or_else(|| {
            DataError::Invalid(format!(
                "department must be one of {}",
                DEPARTMENTS.join(", ")
            ))
        })
}

/// `first.last@orchestrator.lab`, ASCII letters only.
fn email_for(first: &str, last: &str) -> String {
    let ascii = |s: &str| -> String {
        s.chars()
            .map(|c| match c {
                'á' => 'a',
                'é' => 'e',
                'í' => 'i',
                'ó' => 'o',
                'ú' => 'u',
                c => c.to_ascii_lowercase(),
            })
            .filter(char::is_ascii_alphabetic)
            .collect()
    };
    format!("{}.{}@orchestrator.lab", ascii(first), ascii(last))
}

/// Today's UTC date as `YYYY-MM-DD`.
fn today() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    civil_date(i64::try_from(secs / 86_400).unwrap_or(0))
}

/// `YYYY-MM-DD` of `days` since 1970-01-01 (Howard Hinnant's `civil_from_days`).
fn civil_date(days: i64) -> String {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_dates_and_seed_emails() {
        assert_eq!(civil_date(0), "1970-01-01");
        assert_eq!(civil_date(11_016), "2000-02-29");
        assert_eq!(civil_date(20_513), "2026-03-01");
        assert_eq!(today().len(), 10);
        let data = DirectoryData::seed();
        let e = data.get("E1008").unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(e.email, "tomas.alvarez@orchestrator.lab");
        let e = data.get("E1006").unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(e.email, "james.oneill@orchestrator.lab");
    }
}
