//! Camera controls by their native names: what a camera offers, values checked against that,
//! and the board through which `--camera-control` and `POST /controls` reach the camera.
//!
//! Names are the platform's own: libcamera's (`Brightness`, `AfMode`, `ExposureTime`) for the
//! Pi camera and the test source, and those `v4l2-ctl --list-ctrls` prints (`brightness`,
//! `white_balance_automatic`) for V4L2 cameras. A source lists its controls as
//! [`ControlInfo`]s ([`super::VideoSource::controls`]) and sets one checked [`Value`] at a time
//! ([`super::VideoSource::set_control`]).
//!
//! The [`ControlBoard`] is shared by the capture thread and the server. It holds what the open
//! camera offers (published when it opens and after every change) and what was asked for, by
//! name (`--camera-control`, then every accepted `POST /controls`). The capture thread applies
//! all asked-for values whenever a camera opens — so a replugged camera gets them back — and,
//! between two frames, those a request changed; the server waits (bounded) for that and
//! answers with the values the camera then reports and what it refused of that request.
#![forbid(unsafe_code)]

use super::VideoSource;
use std::sync::{Arc, Mutex, MutexGuard};

/// Most controls one request (or the command line) may name.
pub const MAX_CHANGES: usize = 64;

/// The kind of value a control takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ControlType {
    /// On or off.
    Bool,
    /// A whole number in a range.
    Int,
    /// A real number in a range.
    Float,
    /// One of named entries (each with a number).
    Menu,
}

impl ControlType {
    /// The name in `/controls` and `--list-devices`.
    pub fn as_str(self) -> &'static str {
        match self {
            ControlType::Bool => "bool",
            ControlType::Int => "int",
            ControlType::Float => "float",
            ControlType::Menu => "menu",
        }
    }
}

/// A control's value. Menu controls hold their entry's number as `Int`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Value {
    /// A [`ControlType::Bool`] value.
    Bool(bool),
    /// A [`ControlType::Int`] or [`ControlType::Menu`] value.
    Int(i64),
    /// A [`ControlType::Float`] value (always finite).
    Float(f64),
}

impl Value {
    /// The value as a number (true = 1).
    pub fn as_f64(self) -> f64 {
        match self {
            Value::Bool(b) => f64::from(u8::from(b)),
            Value::Int(i) => i as f64,
            Value::Float(f) => f,
        }
    }
}

impl std::fmt::Display for Value {
    /// `true`/`false` or the number; also valid JSON.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Value::Bool(b) => write!(f, "{b}"),
            Value::Int(i) => write!(f, "{i}"),
            Value::Float(x) => write!(f, "{}", Number(*x)),
        }
    }
}

/// A number printed without a trailing `.0` and never as NaN/inf (those print as 0).
#[derive(Clone, Copy, Debug)]
pub struct Number(pub f64);

impl std::fmt::Display for Number {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let x = if self.0.is_finite() { self.0 } else { 0.0 };
        write!(f, "{x}")
    }
}

/// One entry of a menu control.
#[derive(Clone, Debug, PartialEq)]
pub struct MenuEntry {
    /// The number the camera takes.
    pub value: i64,
    /// Its name, as the camera (or libcamera) spells it.
    pub name: String,
}

/// What a camera says about one control.
#[derive(Clone, Debug, PartialEq)]
pub struct ControlInfo {
    /// The native name (see the module docs).
    pub name: String,
    /// What values it takes.
    pub kind: ControlType,
    /// Smallest value (Int/Float; 0 for Bool; the smallest entry for Menu).
    pub min: f64,
    /// Largest value.
    pub max: f64,
    /// Step between values (0 = any).
    pub step: f64,
    /// The camera's default.
    pub default: Value,
    /// The value now (as far as the camera reports it).
    pub value: Value,
    /// The entries of a menu control; empty otherwise.
    pub menu: Vec<MenuEntry>,
    /// Reported but not settable.
    pub read_only: bool,
}

/// A value as given by a user, before it is checked against a control.
#[derive(Clone, Debug, PartialEq)]
pub enum Input {
    /// A JSON number.
    Number(f64),
    /// A JSON `true`/`false`.
    Bool(bool),
    /// Text: from the command line, or a JSON string (a menu entry's name).
    Text(String),
}

impl std::fmt::Display for Input {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Input::Number(n) => write!(f, "{}", Number(*n)),
            Input::Bool(b) => write!(f, "{b}"),
            Input::Text(t) => write!(f, "{t:?}"),
        }
    }
}

/// Why a control could not be set.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ControlError {
    /// The camera has no control of that name.
    #[error("no control named {name:?}; this camera offers: {offered}")]
    Unknown {
        /// The name asked for.
        name: String,
        /// Every control the camera offers, with what it takes.
        offered: String,
    },
    /// The control can be read, not set.
    #[error("{name} is read-only")]
    ReadOnly {
        /// The control.
        name: String,
    },
    /// The value is of the wrong type or outside the control's range or entries.
    #[error("{name} takes {expected} (got {got})")]
    Invalid {
        /// The control.
        name: String,
        /// What it takes, e.g. `a number in -1..1`.
        expected: String,
        /// What was given.
        got: String,
    },
    /// The camera refused a checked value.
    #[error("{name}: the camera refused {value}: {why}")]
    Refused {
        /// The control.
        name: String,
        /// The value.
        value: Value,
        /// The device's reason.
        why: String,
    },
    /// No camera is open to ask.
    #[error("no camera is open now; controls can be set once it is")]
    NoCamera,
    /// More than [`MAX_CHANGES`] controls named at once.
    #[error("at most {MAX_CHANGES} controls may be set at once")]
    TooMany,
}

impl ControlError {
    /// True when the request itself was wrong (a 400), not the camera's state.
    pub fn is_bad_request(&self) -> bool {
        !matches!(self, ControlError::NoCamera | ControlError::Refused { .. })
    }
}

/// `word` without `prefix` at its start (case-insensitive), if it starts so and more follows.
fn strip_prefix_ci<'a>(word: &'a str, prefix: &str) -> Option<&'a str> {
    let head = word.get(..prefix.len())?;
    (head.eq_ignore_ascii_case(prefix) && word.len() > prefix.len()).then(|| &word[prefix.len()..])
}

fn parse_bool(text: &str) -> Option<bool> {
    match text.to_ascii_lowercase().as_str() {
        "1" | "true" | "on" | "yes" => Some(true),
        "0" | "false" | "off" | "no" => Some(false),
        _ => None,
    }
}

impl ControlInfo {
    /// A settable float control: `range` inclusive, any step.
    pub fn float(name: &str, (min, max): (f64, f64), default: f64, value: f64) -> ControlInfo {
        ControlInfo {
            name: name.into(),
            kind: ControlType::Float,
            min,
            max,
            step: 0.0,
            default: Value::Float(default),
            value: Value::Float(value),
            menu: vec![],
            read_only: false,
        }
    }

    /// What the control takes, in words: `a number in -1..1`, `one of Manual, Auto`.
    pub fn expects(&self) -> String {
        let (min, max) = (Number(self.min), Number(self.max));
        match self.kind {
            ControlType::Bool => "true or false".into(),
            ControlType::Int => format!("a whole number in {min}..{max}"),
            ControlType::Float => format!("a number in {min}..{max}"),
            ControlType::Menu => {
                let names: Vec<String> = self
                    .menu
                    .iter()
                    .map(|e| format!("{} ({})", e.name, e.value))
                    .collect();
                format!("one of {}", names.join(", "))
            }
        }
    }

    /// The entry a menu value names: its name (also without the control's own name or a
    /// common prefix, so `AwbMode=Indoor` finds `AwbIndoor`) or its number.
    fn menu_entry(&self, text: &str) -> Option<i64> {
        let text = text.trim();
        let named = |e: &&MenuEntry| {
            e.name.eq_ignore_ascii_case(text)
                || [self.name.as_str(), self.name.trim_end_matches("Mode")]
                    .iter()
                    .any(|p| {
                        strip_prefix_ci(&e.name, p).is_some_and(|r| r.eq_ignore_ascii_case(text))
                    })
        };
        if let Some(e) = self.menu.iter().find(named) {
            return Some(e.value);
        }
        let n: i64 = text.parse().ok()?;
        self.menu.iter().any(|e| e.value == n).then_some(n)
    }

    /// `input` as a value of this control, or why it is not one.
    pub fn check(&self, input: &Input) -> Result<Value, ControlError> {
        if self.read_only {
            return Err(ControlError::ReadOnly {
                name: self.name.clone(),
            });
        }
        let invalid = || ControlError::Invalid {
            name: self.name.clone(),
            expected: self.expects(),
            got: input.to_string(),
        };
        let number = || {
            match input {
                Input::Number(n) => Some(*n),
                Input::Text(t) => t.trim().parse::<f64>().ok(),
                Input::Bool(_) => None,
            }
            .filter(|n| n.is_finite())
        };
        let in_range = |n: f64| n >= self.min && n <= self.max;
        let value = match self.kind {
            ControlType::Bool => match input {
                Input::Bool(b) => Some(*b),
                Input::Number(n) if *n == 0.0 || *n == 1.0 => Some(*n == 1.0),
                Input::Text(t) => parse_bool(t.trim()),
                Input::Number(_) => None,
            }
            .map(Value::Bool),
            ControlType::Int => number()
                .filter(|n| n.fract() == 0.0 && in_range(*n))
                .map(|n| Value::Int(n as i64)),
            ControlType::Float => number().filter(|n| in_range(*n)).map(Value::Float),
            ControlType::Menu => match input {
                Input::Number(n) if n.fract() == 0.0 => {
                    let n = *n as i64;
                    self.menu.iter().any(|e| e.value == n).then_some(n)
                }
                Input::Text(t) => self.menu_entry(t),
                _ => None,
            }
            .map(Value::Int),
        };
        value.ok_or_else(invalid)
    }
}

/// The control named `name` in `offered`: the exact name, else the one equal ignoring case.
pub fn find<'a>(offered: &'a [ControlInfo], name: &str) -> Result<&'a ControlInfo, ControlError> {
    offered
        .iter()
        .find(|c| c.name == name)
        .or_else(|| offered.iter().find(|c| c.name.eq_ignore_ascii_case(name)))
        .ok_or_else(|| ControlError::Unknown {
            name: name.to_string(),
            offered: describe_all(offered),
        })
}

/// Every control with what it takes, for messages: `Brightness (a number in -1..1), ...`.
pub fn describe_all(offered: &[ControlInfo]) -> String {
    if offered.is_empty() {
        return "no controls".into();
    }
    offered
        .iter()
        .map(|c| {
            if c.read_only {
                format!("{} (read-only)", c.name)
            } else {
                format!("{} ({})", c.name, c.expects())
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The lines `--list-devices` prints for a camera's controls, indented by two spaces.
pub fn list_lines(offered: &[ControlInfo]) -> String {
    let mut out = String::new();
    if offered.is_empty() {
        return out;
    }
    out.push_str("  controls (--camera-control NAME=VALUE):\n");
    for c in offered {
        let range = match c.kind {
            ControlType::Bool => String::new(),
            ControlType::Menu => format!(
                " {}",
                c.menu
                    .iter()
                    .map(|e| format!("{}={}", e.value, e.name))
                    .collect::<Vec<_>>()
                    .join(" ")
            ),
            _ => format!(" {}..{}", Number(c.min), Number(c.max)),
        };
        out.push_str(&format!(
            "    {} ({}{range}) default={} value={}{}\n",
            c.name,
            c.kind.as_str(),
            c.default,
            c.value,
            if c.read_only { " read-only" } else { "" }
        ));
    }
    out
}

/// `NAME=VALUE` from `--camera-control` (and the rpicam-style aliases).
pub fn parse_assignment(text: &str) -> Result<(String, Input), String> {
    let (name, value) = text
        .split_once('=')
        .ok_or_else(|| format!("must be NAME=VALUE (got {text:?})"))?;
    let name = name.trim();
    if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
        return Err(format!(
            "the name must be letters, digits and _ (got {name:?})"
        ));
    }
    Ok((name.to_string(), Input::Text(value.trim().to_string())))
}

#[derive(Debug, Default)]
struct BoardState {
    /// What the open camera offers; `None` while no camera is open.
    offered: Option<Vec<ControlInfo>>,
    /// Asked-for values by name (a later one replaces an earlier one of the same name).
    wanted: Vec<(String, Input)>,
    /// Names changed since the capture thread last applied changes: only these are set
    /// between frames (a camera that opens gets all of `wanted`).
    changed: Vec<String>,
    /// Bumped by every accepted change.
    generation: u64,
    /// The generation the open camera has had applied.
    applied: u64,
    /// What the camera refused of the last values applied, by control name.
    refused: Vec<(String, ControlError)>,
}

/// An accepted change, to wait for with [`ControlBoard::outcome`].
#[derive(Debug, Clone, PartialEq)]
pub struct Ticket {
    generation: u64,
    names: Vec<String>,
}

/// The shared state between the server and the capture thread (see the module docs).
#[derive(Debug, Default)]
pub struct ControlBoard {
    state: Mutex<BoardState>,
}

impl ControlBoard {
    /// A board holding the command line's `--camera-control` values, applied when the camera
    /// opens.
    pub fn new(initial: Vec<(String, Input)>) -> Arc<ControlBoard> {
        let board = ControlBoard::default();
        {
            let mut s = board.lock();
            for (name, input) in initial {
                merge(&mut s.wanted, name, input);
            }
        }
        Arc::new(board)
    }

    fn lock(&self) -> MutexGuard<'_, BoardState> {
        // A panic elsewhere while holding the lock leaves consistent data (every change is
        // one assignment), so keep going with it.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// What the open camera offers now, or `None` when no camera is open.
    pub fn offered(&self) -> Option<Vec<ControlInfo>> {
        self.lock().offered.clone()
    }

    /// Checks every change against what the open camera offers and, only if all are good,
    /// records them for the capture thread; returns what to wait for.
    pub fn request(&self, changes: Vec<(String, Input)>) -> Result<Ticket, ControlError> {
        if changes.len() > MAX_CHANGES {
            return Err(ControlError::TooMany);
        }
        let mut s = self.lock();
        let offered = s.offered.as_ref().ok_or(ControlError::NoCamera)?;
        let mut checked = Vec::with_capacity(changes.len());
        for (name, input) in changes {
            let info = find(offered, &name)?;
            info.check(&input)?;
            checked.push((info.name.clone(), input));
        }
        let names: Vec<String> = checked.iter().map(|(n, _)| n.clone()).collect();
        for (name, input) in checked {
            if !s.changed.contains(&name) {
                s.changed.push(name.clone());
            }
            merge(&mut s.wanted, name, input);
        }
        s.generation += 1;
        Ok(Ticket {
            generation: s.generation,
            names,
        })
    }

    /// Once the change has been applied: what the camera refused of it (usually nothing).
    pub fn outcome(&self, ticket: &Ticket) -> Option<Vec<ControlError>> {
        let s = self.lock();
        (s.offered.is_some() && s.applied >= ticket.generation).then(|| {
            s.refused
                .iter()
                .filter(|(name, _)| ticket.names.contains(name))
                .map(|(_, e)| e.clone())
                .collect()
        })
    }

    /// The camera just opened: applies every asked-for value and publishes what it offers.
    pub fn opened(&self, source: &mut dyn VideoSource) {
        let (generation, wanted) = {
            let mut s = self.lock();
            s.changed.clear();
            (s.generation, s.wanted.clone())
        };
        self.apply(source, generation, &wanted, log::Level::Info);
    }

    /// Between frames: applies the values changed since the last time, if any.
    pub fn refresh(&self, source: &mut dyn VideoSource) {
        let (generation, changed) = {
            let mut s = self.lock();
            if s.applied == s.generation && s.offered.is_some() {
                return;
            }
            let names = std::mem::take(&mut s.changed);
            let changed: Vec<(String, Input)> = s
                .wanted
                .iter()
                .filter(|(n, _)| names.contains(n))
                .cloned()
                .collect();
            (s.generation, changed)
        };
        // A slider in the page sends a change after each answer: not one info line each.
        self.apply(source, generation, &changed, log::Level::Debug);
    }

    /// The camera is gone: nothing is offered until one opens again.
    pub fn closed(&self) {
        self.lock().offered = None;
    }

    /// Sets `wanted` on the camera, then publishes what it offers as applied at `generation`.
    fn apply(
        &self,
        source: &mut dyn VideoSource,
        generation: u64,
        wanted: &[(String, Input)],
        level: log::Level,
    ) {
        let mut offered = source.controls();
        let mut refused = Vec::new();
        for (name, input) in wanted {
            let outcome = find(&offered, name).and_then(|info| {
                let value = info.check(input)?;
                source
                    .set_control(info, value)
                    .map_err(|why| ControlError::Refused {
                        name: info.name.clone(),
                        value,
                        why,
                    })
            });
            if let Err(e) = outcome {
                log::warn!("camera control {name}={input}: {e}");
                refused.push((name.clone(), e));
            }
        }
        if !wanted.is_empty() {
            offered = source.controls();
            let set: Vec<String> = wanted
                .iter()
                .filter_map(|(n, _)| find(&offered, n).ok())
                .map(|c| format!("{}={}", c.name, c.value))
                .collect();
            log::log!(level, "camera controls: {}", set.join(" "));
        }
        let mut s = self.lock();
        s.offered = Some(offered);
        s.applied = generation;
        s.refused = refused;
    }
}

fn merge(wanted: &mut Vec<(String, Input)>, name: String, input: Input) {
    wanted.retain(|(n, _)| !n.eq_ignore_ascii_case(&name));
    wanted.push((name, input));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn float(name: &str, min: f64, max: f64, default: f64) -> ControlInfo {
        ControlInfo::float(name, (min, max), default, default)
    }

    fn awb() -> ControlInfo {
        ControlInfo {
            name: "AwbMode".into(),
            kind: ControlType::Menu,
            min: 0.0,
            max: 2.0,
            step: 1.0,
            default: Value::Int(0),
            value: Value::Int(0),
            menu: ["AwbAuto", "AwbIncandescent", "AwbIndoor"]
                .iter()
                .enumerate()
                .map(|(i, n)| MenuEntry {
                    value: i as i64,
                    name: n.to_string(),
                })
                .collect(),
            read_only: false,
        }
    }

    #[test]
    fn values_are_checked_by_type_range_and_entries() {
        let b = float("Brightness", -1.0, 1.0, 0.0);
        assert_eq!(b.check(&Input::Number(0.5)), Ok(Value::Float(0.5)));
        assert_eq!(
            b.check(&Input::Text("-0.25".into())),
            Ok(Value::Float(-0.25))
        );
        let e = b.check(&Input::Number(1.5)).unwrap_err().to_string();
        assert_eq!(e, "Brightness takes a number in -1..1 (got 1.5)");
        assert!(b.check(&Input::Bool(true)).is_err());
        assert!(b.check(&Input::Text("bright".into())).is_err());
        assert!(b.check(&Input::Text("NaN".into())).is_err());

        let mut i = float("brightness", 0.0, 255.0, 128.0);
        i.kind = ControlType::Int;
        assert_eq!(i.check(&Input::Text("140".into())), Ok(Value::Int(140)));
        assert!(i.check(&Input::Number(1.5)).is_err());
        assert!(i.check(&Input::Number(256.0)).is_err());

        let mut t = float("hflip", 0.0, 1.0, 0.0);
        t.kind = ControlType::Bool;
        assert_eq!(t.check(&Input::Text("1".into())), Ok(Value::Bool(true)));
        assert_eq!(t.check(&Input::Bool(false)), Ok(Value::Bool(false)));
        assert!(t.check(&Input::Number(2.0)).is_err());

        let a = awb();
        assert_eq!(a.check(&Input::Text("Indoor".into())), Ok(Value::Int(2)));
        assert_eq!(
            a.check(&Input::Text("awbincandescent".into())),
            Ok(Value::Int(1))
        );
        assert_eq!(a.check(&Input::Number(0.0)), Ok(Value::Int(0)));
        let e = a
            .check(&Input::Text("Sunny".into()))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("one of AwbAuto (0), AwbIncandescent (1), AwbIndoor (2)"),
            "{e}"
        );

        let mut ro = float("SensorTemperature", 0.0, 100.0, 0.0);
        ro.read_only = true;
        assert_eq!(
            ro.check(&Input::Number(1.0)),
            Err(ControlError::ReadOnly {
                name: "SensorTemperature".into()
            })
        );
    }

    #[test]
    fn unknown_names_list_what_the_camera_offers() {
        let offered = vec![float("Brightness", -1.0, 1.0, 0.0), awb()];
        assert_eq!(
            find(&offered, "brightness").map(|c| &c.name),
            Ok(&offered[0].name)
        );
        let e = find(&offered, "Gamma").unwrap_err().to_string();
        assert!(e.starts_with("no control named \"Gamma\"; this camera offers: Brightness (a number in -1..1), AwbMode (one of"), "{e}");
    }

    #[test]
    fn assignments_need_a_plain_name_and_an_equals_sign() {
        assert_eq!(
            parse_assignment("AfMode=Continuous"),
            Ok(("AfMode".into(), Input::Text("Continuous".into())))
        );
        assert!(parse_assignment("AfMode").is_err());
        assert!(parse_assignment("=1").is_err());
        assert!(parse_assignment("a b=1").is_err());
    }

    /// A camera with one float control that remembers what it was set to.
    struct Knob(ControlInfo, Vec<Value>);

    impl VideoSource for Knob {
        fn describe(&self) -> String {
            "knob".into()
        }
        fn next_frame(
            &mut self,
        ) -> Result<Option<super::super::Frame<'_>>, super::super::CaptureError> {
            Ok(None)
        }
        fn controls(&self) -> Vec<ControlInfo> {
            vec![self.0.clone()]
        }
        fn set_control(&mut self, _: &ControlInfo, value: Value) -> Result<(), String> {
            self.0.value = value;
            self.1.push(value);
            Ok(())
        }
    }

    #[test]
    fn the_board_applies_on_open_on_change_and_again_after_a_reopen() {
        let board = ControlBoard::new(vec![("Brightness".into(), Input::Text("0.25".into()))]);
        assert_eq!(board.request(vec![]), Err(ControlError::NoCamera));
        let mut cam = Knob(float("Brightness", -1.0, 1.0, 0.0), vec![]);
        board.opened(&mut cam);
        assert_eq!(cam.1, vec![Value::Float(0.25)]);
        board.refresh(&mut cam);
        assert_eq!(cam.1.len(), 1, "nothing changed: nothing applied");

        let bad = board.request(vec![("Brightness".into(), Input::Number(3.0))]);
        assert!(matches!(bad, Err(ControlError::Invalid { .. })));
        let ticket = board
            .request(vec![("brightness".into(), Input::Number(-0.5))])
            .unwrap();
        assert_eq!(board.outcome(&ticket), None, "not applied yet");
        board.refresh(&mut cam);
        assert_eq!(board.outcome(&ticket), Some(vec![]));
        assert_eq!(cam.0.value, Value::Float(-0.5));
        assert_eq!(cam.1.len(), 2, "the change set once");
        board.refresh(&mut cam);
        assert_eq!(cam.1.len(), 2, "and not again between frames");
        assert_eq!(board.offered().unwrap()[0].value, Value::Float(-0.5));

        board.closed();
        assert_eq!(board.offered(), None);
        let mut replugged = Knob(float("Brightness", -1.0, 1.0, 0.0), vec![]);
        board.opened(&mut replugged);
        assert_eq!(
            replugged.1,
            vec![Value::Float(-0.5)],
            "the live value comes back"
        );
    }

    #[test]
    fn a_control_refused_at_open_is_not_set_again_nor_blamed_on_a_later_change() {
        let board = ControlBoard::new(vec![("Gamma".into(), Input::Text("2".into()))]);
        let mut cam = Knob(float("Brightness", -1.0, 1.0, 0.0), vec![]);
        board.opened(&mut cam);
        assert!(cam.1.is_empty());
        let ticket = board
            .request(vec![("Brightness".into(), Input::Number(0.5))])
            .unwrap();
        board.refresh(&mut cam);
        assert_eq!(
            board.outcome(&ticket),
            Some(vec![]),
            "Gamma is not this change's"
        );
        assert_eq!(cam.1, vec![Value::Float(0.5)]);
    }
}
