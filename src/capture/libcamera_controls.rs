//! libcamera's controls (`Brightness`, `AfMode`, `ExposureTime`…) as [`ControlInfo`]s, and
//! checked values back as libcamera `ControlValue`s, for the Pi camera backend.
//!
//! Offered: every scalar control in the camera's `ControlInfoMap` that libcamera knows by id
//! (booleans, 32/64-bit integers, floats; integers with named enumerators become menus
//! listing the values the camera supports). Arrays (`FrameDurationLimits`, `ColourGains`…)
//! are left out. libcamera has no "read the current value": the source reports the default
//! until a value is set, then the value it set. A set value travels with the next request
//! queued (see `LibcameraSource::give_back`), as libcamera applies controls per request.
#![forbid(unsafe_code)]

use super::controls::{ControlInfo, ControlType, MenuEntry, Value};
use libcamera::control::ControlInfoMap;
use libcamera::control_value::ControlValue;
use libcamera::controls::ControlId;

/// How a control's value is built for libcamera.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scalar {
    /// `bool`.
    Bool,
    /// `int32_t` (also menus).
    I32,
    /// `int64_t` (e.g. `ExposureTime` on some versions, `FrameDuration`).
    I64,
    /// `float`.
    F32,
}

/// One control the camera offers.
#[derive(Clone, Debug)]
pub struct Offered {
    /// libcamera's numeric id.
    pub id: u32,
    /// Its value type.
    pub scalar: Scalar,
    /// Name, range, default and value as the rest of the daemon sees them.
    pub info: ControlInfo,
}

/// The first element of a scalar value, and its type.
fn scalar(v: &ControlValue) -> Option<(Scalar, f64)> {
    match v {
        ControlValue::Bool(b) => b.first().map(|&b| (Scalar::Bool, f64::from(u8::from(b)))),
        ControlValue::Int32(i) => i.first().map(|&i| (Scalar::I32, f64::from(i))),
        ControlValue::Int64(i) => i.first().map(|&i| (Scalar::I64, i as f64)),
        ControlValue::Float(f) => f.first().map(|&f| (Scalar::F32, f64::from(f))),
        _ => None,
    }
}

/// Every scalar control in `map` (see the module docs), by name.
pub fn offered(map: &ControlInfoMap) -> Vec<Offered> {
    let mut out: Vec<Offered> = map
        .into_iter()
        .filter_map(|(id, info)| {
            let cid = ControlId::from_id(id)?;
            if cid.is_array() {
                return None;
            }
            let (kind, min) = scalar(&info.min())?;
            let (_, max) = scalar(&info.max())?;
            let default = scalar(&info.def()).map_or(min, |(_, d)| d);
            let names = cid.enumerators_map();
            let (control_type, menu) = if !names.is_empty() && kind == Scalar::I32 {
                let supported: Vec<i64> = info
                    .values()
                    .iter()
                    .filter_map(|v| scalar(v).map(|(_, x)| x as i64))
                    .collect();
                let mut menu: Vec<MenuEntry> = names
                    .into_iter()
                    .map(|(value, name)| MenuEntry {
                        value: i64::from(value),
                        name,
                    })
                    .filter(|e| supported.is_empty() || supported.contains(&e.value))
                    .collect();
                menu.sort_by_key(|e| e.value);
                (ControlType::Menu, menu)
            } else {
                let t = match kind {
                    Scalar::Bool => ControlType::Bool,
                    Scalar::I32 | Scalar::I64 => ControlType::Int,
                    Scalar::F32 => ControlType::Float,
                };
                (t, vec![])
            };
            let value = |x: f64| match control_type {
                ControlType::Bool => Value::Bool(x != 0.0),
                ControlType::Float => Value::Float(x),
                _ => Value::Int(x as i64),
            };
            Some(Offered {
                id,
                scalar: kind,
                info: ControlInfo {
                    name: cid.name(),
                    kind: control_type,
                    min: if kind == Scalar::Bool { 0.0 } else { min },
                    max: if kind == Scalar::Bool { 1.0 } else { max },
                    step: if control_type == ControlType::Float {
                        0.0
                    } else {
                        1.0
                    },
                    default: value(default),
                    value: value(default),
                    menu,
                    read_only: false,
                },
            })
        })
        .collect();
    out.sort_by(|a, b| a.info.name.cmp(&b.info.name));
    let skipped: Vec<String> = map
        .into_iter()
        .filter(|(id, _)| !out.iter().any(|o| o.id == *id))
        .map(|(id, _)| ControlId::from_id(id).map_or(format!("{id:#x}"), |c| c.name()))
        .collect();
    log::debug!(
        "libcamera: the camera offers {} controls; left out (arrays, other types, unknown ids): {}",
        map.size(),
        if skipped.is_empty() {
            "none".to_string()
        } else {
            skipped.join(", ")
        }
    );
    out
}

/// `value` (checked against `o.info`) as the `ControlValue` libcamera takes for `o`.
pub fn control_value(o: &Offered, value: Value) -> ControlValue {
    let x = value.as_f64();
    match o.scalar {
        Scalar::Bool => ControlValue::from(x != 0.0),
        Scalar::I32 => ControlValue::from(x.round() as i32),
        Scalar::I64 => ControlValue::from(x.round() as i64),
        Scalar::F32 => ControlValue::from(x as f32),
    }
}
