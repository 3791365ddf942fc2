//! Request strategies read off the descriptors: a [`DynamicMessage`] of any input type,
//! filled field by field, each value drawn from what the field's type (and, for strings,
//! its name) makes interesting — edge cases and hostile text, or values valid enough to
//! pass validation and reach the database. Every strategy shrinks (alternatives toward
//! the first one listed, fields toward unset, lists toward fewer items).

use std::fmt::Debug;

use bytes::Bytes;
use popug_auth::Permission;
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::select;
use proptest::strategy::{BoxedStrategy, Union};
use proptest::string::string_regex;
use prost_reflect::{DynamicMessage, FieldDescriptor, Kind, MessageDescriptor, Value};
use uuid::Uuid;

type S<T> = BoxedStrategy<T>;

/// What generated requests may refer to: real ids, names and secrets of the mesh.
#[derive(Debug, Clone, Default)]
pub struct Known {
    pub user_ids: Vec<String>,
    pub task_ids: Vec<String>,
    pub usernames: Vec<String>,
    pub passwords: Vec<String>,
    pub emails: Vec<String>,
    /// Refresh tokens of throwaway users (never the admin's or a caller's).
    pub refresh_tokens: Vec<String>,
}

impl Known {
    /// Every known id, users' and tasks'.
    fn ids(&self) -> Vec<String> {
        self.user_ids
            .iter()
            .chain(&self.task_ids)
            .cloned()
            .collect()
    }
}

/// How a field is filled: the odds of a valid-looking value against a wild one, and of
/// the field being set at all.
#[derive(Debug, Clone, Copy)]
struct Mix {
    valid: u32,
    wild: u32,
    present: f64,
}

/// Values meant to pass validation …
const VALID: Mix = Mix {
    valid: 1,
    wild: 0,
    present: 0.9,
};
/// … hostile ones …
const HOSTILE: Mix = Mix {
    valid: 0,
    wild: 1,
    present: 1.0,
};
/// … or anything.
const ANY: Mix = Mix {
    valid: 1,
    wild: 2,
    present: 0.6,
};

impl Mix {
    /// The items of a hostile list: some valid, so that a bad one hides among them.
    fn items(self) -> Mix {
        match self.valid {
            0 => Mix { valid: 1, ..self },
            _ => self,
        }
    }
}

/// Nested messages deeper than this are left empty.
const MAX_DEPTH: u32 = 3;

/// Any message of type `desc`. Most are valid but for one hostile field (so that the
/// hostile value gets past the validation of the others); the rest entirely valid, or
/// anything at all.
pub fn request(desc: &MessageDescriptor, known: &Known) -> S<DynamicMessage> {
    let n = desc.fields().len() as u32;
    let mut modes = vec![
        (n.max(1), message(desc, known, |_| VALID, 0)),
        (n.max(1), message(desc, known, |_| ANY, 0)),
    ];
    for k in 0..desc.fields().len() {
        let one = message(
            desc,
            known,
            move |i| if i == k { HOSTILE } else { VALID },
            0,
        );
        modes.push((3, one));
    }
    Union::new_weighted(modes).boxed()
}

/// A message of type `desc`, its `i`th field filled as `mix(i)` says.
fn message(
    desc: &MessageDescriptor,
    known: &Known,
    mix: impl Fn(usize) -> Mix,
    depth: u32,
) -> S<DynamicMessage> {
    // No request has a map; they stay unset.
    let fields: Vec<FieldDescriptor> = desc.fields().collect();
    let values: Vec<S<Option<Value>>> = fields
        .iter()
        .enumerate()
        .filter(|(_, f)| !f.is_map())
        .map(|(i, f)| {
            let mix = mix(i);
            let value = field(f, known, mix, depth);
            if mix.present < 1.0 {
                proptest::option::weighted(mix.present, value).boxed()
            } else {
                value.prop_map(Some).boxed()
            }
        })
        .collect();
    let desc = desc.clone();
    values
        .prop_map(move |values| {
            let mut message = DynamicMessage::new(desc.clone());
            for (field, value) in fields.iter().filter(|f| !f.is_map()).zip(values) {
                if let Some(value) = value {
                    message.set_field(field, value);
                }
            }
            message
        })
        .boxed()
}

fn field(f: &FieldDescriptor, known: &Known, mix: Mix, depth: u32) -> S<Value> {
    if !f.is_list() {
        return single(f, known, mix, depth, false);
    }
    // Long lists hold no huge strings: a few hundred of those would only test the
    // message size limit, slowly.
    let mix = mix.items();
    let full = single(f, known, mix, depth, false);
    let cheap = single(f, known, mix, depth, true);
    let mut sizes = vec![
        (3, vec(full, 0..=1).boxed()),
        (3, vec(cheap.clone(), 2..10).boxed()),
        (2, vec(cheap.clone(), 10..300).boxed()),
        (1, vec(cheap.clone(), 500..=501).boxed()),
    ];
    if f.name().ends_with("ids") {
        sizes.push((1, vec(cheap, 1000..1500).boxed()));
    }
    Union::new_weighted(sizes).prop_map(Value::List).boxed()
}

/// One value of `f`'s type; `cheap` leaves out huge strings.
fn single(f: &FieldDescriptor, known: &Known, mix: Mix, depth: u32, cheap: bool) -> S<Value> {
    let name = f.name();
    match f.kind() {
        Kind::String => string(name, known, mix, cheap)
            .prop_map(Value::String)
            .boxed(),
        Kind::Bytes => vec(any::<u8>(), 0..64)
            .prop_map(|b| Value::Bytes(Bytes::from(b)))
            .boxed(),
        Kind::Bool => any::<bool>().prop_map(Value::Bool).boxed(),
        Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => {
            let valid = if name == "page_size" {
                (0..=500i32).boxed()
            } else {
                (0..100i32).boxed()
            };
            either(mix, valid, int32()).prop_map(Value::I32).boxed()
        }
        Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => either(mix, (0..1000i64).boxed(), int64())
            .prop_map(Value::I64)
            .boxed(),
        Kind::Uint32 | Kind::Fixed32 => {
            prop_oneof![Just(0u32), Just(1), Just(u32::MAX), any::<u32>()]
                .prop_map(Value::U32)
                .boxed()
        }
        Kind::Uint64 | Kind::Fixed64 => {
            prop_oneof![Just(0u64), Just(1), Just(u64::MAX), any::<u64>()]
                .prop_map(Value::U64)
                .boxed()
        }
        Kind::Float => prop_oneof![
            Just(0.0f32),
            Just(f32::NAN),
            Just(-f32::INFINITY),
            any::<f32>()
        ]
        .prop_map(Value::F32)
        .boxed(),
        Kind::Double => prop_oneof![
            Just(0.0f64),
            Just(f64::NAN),
            Just(f64::INFINITY),
            any::<f64>()
        ]
        .prop_map(Value::F64)
        .boxed(),
        Kind::Enum(e) => {
            let numbers: Vec<i32> = e.values().map(|v| v.number()).collect();
            let next = numbers.iter().max().map_or(1, |n| n.saturating_add(1));
            let unknown = prop_oneof![select(vec![next, 99, -1, i32::MIN, i32::MAX]), any::<i32>()];
            either(mix, select(numbers).boxed(), unknown.boxed())
                .prop_map(Value::EnumNumber)
                .boxed()
        }
        Kind::Message(m) if depth < MAX_DEPTH => message(&m, known, |_| mix, depth + 1)
            .prop_map(Value::Message)
            .boxed(),
        Kind::Message(m) => Just(Value::Message(DynamicMessage::new(m))).boxed(),
    }
}

fn either<T: Debug + 'static>(mix: Mix, valid: S<T>, wild: S<T>) -> S<T> {
    let options = vec![(mix.valid, valid), (mix.wild, wild)];
    Union::new_weighted(options.into_iter().filter(|(w, _)| *w > 0).collect()).boxed()
}

fn int32() -> S<i32> {
    prop_oneof![
        select(vec![0, -1, 1, 500, 501, i32::MIN, i32::MAX]),
        any::<i32>()
    ]
    .boxed()
}

fn int64() -> S<i64> {
    prop_oneof![
        select(vec![0, -1, 1, i64::from(i32::MAX) + 1, i64::MIN, i64::MAX]),
        any::<i64>()
    ]
    .boxed()
}

fn re(regex: &str) -> S<String> {
    string_regex(regex).unwrap().boxed()
}

fn strs(list: &[&'static str]) -> S<String> {
    select(list.to_vec()).prop_map(str::to_owned).boxed()
}

/// One of `pool`, or `fallback` when the pool is empty.
fn pick(pool: &[String], fallback: S<String>) -> S<String> {
    if pool.is_empty() {
        fallback
    } else {
        select(pool.to_vec()).boxed()
    }
}

fn string(name: &str, known: &Known, mix: Mix, cheap: bool) -> S<String> {
    either(
        mix,
        valid_string(name, known),
        wild_string(name, known, cheap),
    )
}

fn is_day(name: &str) -> bool {
    name == "day" || name.ends_with("_day")
}

fn is_id(name: &str) -> bool {
    ["id", "ids"].contains(&name) || name.ends_with("_id") || name.ends_with("_ids")
}

/// A string that passes the validation of a field called `name`, as far as its name
/// tells (ids of real users and tasks, days around today, well-formed names).
fn valid_string(name: &str, known: &Known) -> S<String> {
    match name {
        "username" => prop_oneof![
            pick(&known.usernames, re("admin")),
            re("[a-z][a-z0-9_.-]{2,31}"),
        ]
        .boxed(),
        "password" => prop_oneof![
            pick(&known.passwords, re("[a-z]{8}")),
            re("[a-zA-Z0-9!@# ]{8,40}"),
        ]
        .boxed(),
        "name" | "surname" => re("[A-Z][a-z]{0,15}( [A-Za-zА-я]{1,10})?"),
        "email" => prop_oneof![
            re("[a-z][a-z0-9.+_]{0,15}@[a-z]{1,10}\\.(example|test|com)"),
            pick(&known.emails, re("a@b.cd")),
        ]
        .boxed(),
        "title" => re("[A-Za-z0-9][A-Za-z0-9 ,.!?'-]{0,60}"),
        "jira_id" => prop_oneof![Just(String::new()), re("[A-Z][A-Z0-9]{1,8}-[0-9]{1,5}")].boxed(),
        "description" => re("[A-Za-zа-я0-9 ,.!?\\n\\t🦜]{0,300}"),
        // TaskKeeper's and Accounting's are numbers, Account's a base64url username.
        "page_token" => prop_oneof![
            Just(String::new()),
            re("[1-9][0-9]{0,4}"),
            base64(pick(&known.usernames, re("[a-z]{3,8}"))),
        ]
        .boxed(),
        "refresh_token" => pick(&known.refresh_tokens, re("[A-Za-z0-9_-]{43}")),
        "extra_permissions" => select(Permission::ALL.to_vec())
            .prop_map(|p| p.as_str().to_owned())
            .boxed(),
        n if is_day(n) => days(),
        n if is_id(n) => {
            let ids = known.ids();
            // Empty (the caller, for some) is a field left unset.
            prop_oneof![6 => pick(&ids, uuid()), 1 => uuid()].boxed()
        }
        _ => re("[a-z]{0,12}"),
    }
}

/// `text` in base64url without padding, as Account's page tokens are.
fn base64(text: S<String>) -> S<String> {
    use base64::Engine;
    text.prop_map(|t| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(t))
        .boxed()
}

fn uuid() -> S<String> {
    any::<u128>()
        .prop_map(|n| Uuid::from_u128(n).to_string())
        .boxed()
}

/// "YYYY-MM-DD" around today (so that days open, close and hold entries) or anywhere in
/// the range the services accept.
fn days() -> S<String> {
    let today = time::OffsetDateTime::now_utc().date();
    let near = (-10i64..=2).prop_map(move |d| {
        let day = today + time::Duration::days(d);
        format!(
            "{:04}-{:02}-{:02}",
            day.year(),
            u8::from(day.month()),
            day.day()
        )
    });
    let any_day =
        (2000i32..=2999, 1u8..=12, 1u8..=28).prop_map(|(y, m, d)| format!("{y:04}-{m:02}-{d:02}"));
    prop_oneof![Just(String::new()), near, any_day].boxed()
}

/// Anything: empty, huge, control characters (NUL above all), odd Unicode, SQL, lengths
/// just past a limit, real ids — and more often what is hostile to a field called `name`
/// (malformed days, ids, page tokens, Jira keys).
fn wild_string(name: &str, known: &Known, cheap: bool) -> S<String> {
    let ids = known.ids();
    let mut options: Vec<(u32, S<String>)> = vec![
        (1, Just(String::new()).boxed()),
        (3, re("[a-z]{1,8}\\x00[a-z]{0,8}")),
        (
            2,
            re("[a-z]{0,3}[\\x01-\\x08\\x0b\\x0c\\x0e-\\x1f\\x7f\\u{80}-\\u{9f}][a-z]{0,3}"),
        ),
        (1, re(".{1,40}")),
        (1, re("\\PC{1,40}")),
        (2, strs(UNICODE)),
        (1, strs(SQL)),
        (1, int64().prop_map(|n| n.to_string()).boxed()),
        (1, pick(&ids, uuid())),
        (
            2,
            (select(LENGTHS.to_vec()), re("[a-zA-Zé🦜]"))
                .prop_map(|(n, c)| c.repeat(n))
                .boxed(),
        ),
    ];
    if !cheap {
        let huge = (re(".{1,4}"), 10_000usize..100_000)
            .prop_map(|(unit, n)| unit.chars().cycle().take(n).collect::<String>());
        options.push((1, huge.boxed()));
    }
    let specific: Vec<(u32, S<String>)> = match name {
        n if is_day(n) => vec![
            (5, strs(DAYS)),
            (
                3,
                (
                    select(vec![0, 1, 1999, 2000, 2999, 3000, 4713, 9999]),
                    select(vec![0u8, 1, 2, 12, 13]),
                    select(vec![0u8, 1, 28, 29, 30, 31, 32]),
                )
                    .prop_map(|(y, m, d)| format!("{y:04}-{m:02}-{d:02}"))
                    .boxed(),
            ),
            (1, re("[0-9+-]{1,6}-[0-9]{1,3}-[0-9]{1,3}")),
        ],
        n if is_id(n) => vec![
            (5, strs(BAD_IDS)),
            (2, uuid().prop_map(|u| u.to_uppercase()).boxed()),
            (
                1,
                pick(&ids, uuid()).prop_map(|id| format!(" {id}")).boxed(),
            ),
        ],
        "page_token" => vec![
            (4, strs(NUMBERS)),
            (2, base64(wild_string("", known, true))),
            (
                2,
                vec(any::<u8>(), 0..24)
                    .prop_map(|b| {
                        use base64::Engine;
                        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
                    })
                    .boxed(),
            ),
        ],
        "jira_id" => vec![(6, strs(JIRA)), (2, re("[A-Za-z0-9]{0,70}-[0-9 ]{0,30}"))],
        _ => Vec::new(),
    };
    // What is hostile to this very field comes three times as often as the rest.
    options.extend(specific.into_iter().map(|(w, s)| (3 * w, s)));
    Union::new_weighted(options).boxed()
}

const NUMBERS: &[&str] = &[
    "0",
    "-1",
    "9223372036854775807",
    "9223372036854775808",
    "-9223372036854775808",
    "1e3",
    " 1",
    "+1",
    "0001",
    "1.5",
];

/// Lengths just inside and just outside the services' limits.
const LENGTHS: [usize; 16] = [
    1, 2, 3, 7, 8, 32, 33, 64, 65, 100, 101, 128, 129, 200, 201, 255,
];

const UNICODE: &[&str] = &[
    "🦜",
    "👩‍👩‍👧‍👦",
    "\u{202e}kcatta",
    "שלום עולם",
    "مرحبا",
    "e\u{301}\u{301}\u{301}\u{301}",
    "Z\u{337}\u{322}\u{349}a\u{338}l\u{335}g\u{334}o",
    "\u{feff}",
    "\u{200b}",
    "\u{fffd}",
    "\u{10ffff}",
    "  ",
    "\t",
    "\r\n",
    "попугай",
    "\u{2028}",
];

const SQL: &[&str] = &[
    "'; DROP TABLE accounts; --",
    "' OR '1'='1",
    "\"; DROP TABLE tasks; --",
    "%",
    "_",
    "\\",
    "%' --",
    "$1",
    "NULL",
    "' UNION SELECT password_hash FROM accounts --",
    "1; SELECT pg_sleep(10)",
];

const BAD_IDS: &[&str] = &[
    "00000000-0000-0000-0000-000000000000",
    "ffffffff-ffff-ffff-ffff-ffffffffffff",
    "not-a-uuid",
    "{01a23336-6fe1-76aa-a24e-bc3db5d41a42}",
    "urn:uuid:01a23336-6fe1-76aa-a24e-bc3db5d41a42",
    "01a233366fe176aaa24ebc3db5d41a42",
    " 01a23336-6fe1-76aa-a24e-bc3db5d41a42",
    "01a23336-6fe1-76aa-a24e-bc3db5d41a4",
    "01a23336-6fe1-76aa-a24e-bc3db5d41a42\u{0}",
];

const DAYS: &[&str] = &[
    "9999-12-31",
    "-5000-01-01",
    "2026-02-30",
    "0000-00-00",
    "1999-12-31",
    "2000-01-01",
    "2999-12-31",
    "3000-01-01",
    "2024-02-29",
    "2023-02-29",
    "+10000-01-01",
    "2026-1-1",
    "2026-01-01T00:00:00Z",
    "2026-13-01",
    "today",
];

const JIRA: &[&str] = &[
    "UBERPOP-42",
    "A-1",
    "UBERPOP-",
    "[UBERPOP-1]",
    "UBERPOP-99999999999999999999999",
    "ABCDEFGHIJKLMNOPQRSTUVWXYZABCDEFGHIJKLMNOPQRSTUVWXYZABCDEFGHIJ-12345",
    "uberpop-1",
    " UBERPOP-1 ",
];

/// A request for the report: JSON-like, long strings and lists cut.
pub fn show(message: &DynamicMessage) -> String {
    let fields: Vec<String> = message
        .fields()
        .map(|(f, v)| format!("{}: {}", f.name(), show_value(v)))
        .collect();
    format!("{{{}}}", fields.join(", "))
}

fn show_value(value: &Value) -> String {
    match value {
        Value::String(s) if s.chars().count() > 60 => {
            let head: String = s.chars().take(40).collect();
            format!("{head:?}… ({} chars, {} bytes)", s.chars().count(), s.len())
        }
        Value::String(s) => format!("{s:?}"),
        Value::List(items) => {
            let head: Vec<String> = items.iter().take(5).map(show_value).collect();
            let more = if items.len() > 5 {
                format!(", … ({} items)", items.len())
            } else {
                String::new()
            };
            format!("[{}{more}]", head.join(", "))
        }
        Value::Message(m) => show(m),
        Value::EnumNumber(n) => n.to_string(),
        Value::I32(n) => n.to_string(),
        Value::I64(n) => n.to_string(),
        Value::U32(n) => n.to_string(),
        Value::U64(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Bytes(b) => format!("<{} bytes>", b.len()),
        other => format!("{other:?}"),
    }
}
