//! V4L2 controls (brightness, white balance, focus, flips…) listed and set by the names
//! `v4l2-ctl --list-ctrls` prints, for the USB backend.
//!
//! The `v4l` crate's control calls unwrap on control types and menu names it does not know
//! (a driver's compound or non-UTF-8 entries would end the daemon), so this module makes the
//! few ioctls itself through the crate's wrapper (`v4l::v4l2::ioctl`) and `v4l_sys`
//! structures: `VIDIOC_QUERY_EXT_CTRL` walking the list, `VIDIOC_QUERYMENU` for menu entries,
//! `VIDIOC_G_EXT_CTRLS` / `VIDIOC_S_EXT_CTRLS` for values. Only scalar controls are offered
//! (integer, 64-bit integer, boolean, menu, integer menu); buttons, strings, bitmasks and
//! compound controls are left out, as are disabled ones.

use super::controls::{ControlInfo, ControlType, MenuEntry, Value};
use std::ffi::c_void;
use std::io;
use v4l::v4l2::{self, vidioc};
use v4l::v4l_sys::{v4l2_ext_control, v4l2_ext_controls, v4l2_query_ext_ctrl, v4l2_querymenu};

/// `V4L2_CTRL_TYPE_*` of the controls offered.
const TYPE_INTEGER: u32 = 1;
const TYPE_BOOLEAN: u32 = 2;
const TYPE_MENU: u32 = 3;
const TYPE_INTEGER64: u32 = 5;
const TYPE_INTEGER_MENU: u32 = 9;
/// `V4L2_CTRL_FLAG_*`.
const FLAG_DISABLED: u32 = 0x0001;
const FLAG_READ_ONLY: u32 = 0x0004;
const FLAG_WRITE_ONLY: u32 = 0x0040;
const FLAG_NEXT_CTRL: u32 = 0x8000_0000;
/// `V4L2_CID_HFLIP`, `V4L2_CID_VFLIP` (linux/v4l2-controls.h: V4L2_CID_BASE + 20, + 21).
pub const CID_HFLIP: u32 = 0x0098_0914;
/// See [`CID_HFLIP`].
pub const CID_VFLIP: u32 = 0x0098_0915;
/// Most controls walked (a driver that loops forever stops here).
const MAX_CONTROLS: usize = 1024;

/// One V4L2 control: its id and what it offers.
#[derive(Clone, Debug)]
pub struct V4lControl {
    /// `V4L2_CID_*`.
    pub id: u32,
    /// `V4L2_CTRL_TYPE_*`.
    pub kind: u32,
    /// Name, type, range, value.
    pub info: ControlInfo,
}

/// The name `v4l2-ctl` derives from a driver's control name: lower case, every run of other
/// characters one `_` (`White Balance, Automatic` → `white_balance_automatic`).
pub fn ctl_name(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut gap = false;
    for c in name.chars() {
        if c.is_ascii_alphanumeric() {
            if gap {
                out.push('_');
            }
            gap = false;
            out.push(c.to_ascii_lowercase());
        } else if !out.is_empty() {
            gap = true;
        }
    }
    out
}

/// A NUL-terminated name from a fixed array, lossily as UTF-8.
fn c_name(raw: &[u8]) -> String {
    let end = raw.iter().position(|&b| b == 0).unwrap_or(raw.len());
    String::from_utf8_lossy(&raw[..end]).into_owned()
}

/// Every scalar control of the device `fd`, with its value now.
pub fn query(fd: i32) -> io::Result<Vec<V4lControl>> {
    let mut out = Vec::new();
    let mut id = 0u32;
    for _ in 0..MAX_CONTROLS {
        let mut q = v4l2_query_ext_ctrl {
            id: id | FLAG_NEXT_CTRL,
            // SAFETY: plain C data; all-zero is the reset the ioctl expects.
            ..unsafe { std::mem::zeroed() }
        };
        // SAFETY: VIDIOC_QUERY_EXT_CTRL reads and writes one v4l2_query_ext_ctrl, which `q`
        // is, alive for the whole call.
        let found = unsafe {
            v4l2::ioctl(
                fd,
                vidioc::VIDIOC_QUERY_EXT_CTRL,
                &mut q as *mut v4l2_query_ext_ctrl as *mut c_void,
            )
        };
        match found {
            Ok(()) => {}
            // EINVAL: past the last control.
            Err(e) if e.raw_os_error() == Some(22) => break,
            Err(e) => return Err(e),
        }
        if q.id <= id {
            break;
        }
        id = q.id;
        if let Some(c) = describe(fd, &q) {
            out.push(c);
        }
    }
    Ok(out)
}

fn describe(fd: i32, q: &v4l2_query_ext_ctrl) -> Option<V4lControl> {
    let kind = match q.type_ {
        TYPE_INTEGER | TYPE_INTEGER64 => ControlType::Int,
        TYPE_BOOLEAN => ControlType::Bool,
        TYPE_MENU | TYPE_INTEGER_MENU => ControlType::Menu,
        _ => return None,
    };
    if q.flags & FLAG_DISABLED != 0 || q.nr_of_dims != 0 {
        return None;
    }
    // `name` is a NUL-terminated [c_char; 32]; c_char is i8 or u8 by architecture.
    let raw: [u8; 32] = q.name.map(|c| c as u8);
    let menu = if kind == ControlType::Menu {
        menu_entries(fd, q)
    } else {
        vec![]
    };
    let wrap = |v: i64| match kind {
        ControlType::Bool => Value::Bool(v != 0),
        _ => Value::Int(v),
    };
    let value = if q.flags & FLAG_WRITE_ONLY != 0 {
        q.default_value
    } else {
        get(fd, q.id, q.type_).unwrap_or(q.default_value)
    };
    Some(V4lControl {
        id: q.id,
        kind: q.type_,
        info: ControlInfo {
            name: ctl_name(&c_name(&raw)),
            kind,
            min: q.minimum as f64,
            max: q.maximum as f64,
            step: q.step as f64,
            default: wrap(q.default_value),
            value: wrap(value),
            menu,
            read_only: q.flags & FLAG_READ_ONLY != 0,
        },
    })
}

/// The entries of a menu control; indexes the driver skips (EINVAL) are left out.
fn menu_entries(fd: i32, q: &v4l2_query_ext_ctrl) -> Vec<MenuEntry> {
    let mut out = Vec::new();
    let (min, max) = (q.minimum.max(0), q.maximum.min(q.minimum.max(0) + 255));
    for index in min..=max {
        let mut m = v4l2_querymenu {
            id: q.id,
            index: index as u32,
            // SAFETY: plain C data; all-zero is the reset the ioctl expects.
            ..unsafe { std::mem::zeroed() }
        };
        // SAFETY: VIDIOC_QUERYMENU reads and writes one v4l2_querymenu, which `m` is.
        let ok = unsafe {
            v4l2::ioctl(
                fd,
                vidioc::VIDIOC_QUERYMENU,
                &mut m as *mut v4l2_querymenu as *mut c_void,
            )
        };
        if ok.is_err() {
            continue;
        }
        let name = if q.type_ == TYPE_INTEGER_MENU {
            // SAFETY: for an integer menu the kernel fills the union's `value` member.
            unsafe { m.__bindgen_anon_1.value }.to_string()
        } else {
            // SAFETY: for a named menu the kernel fills the union's `name` member.
            c_name(&unsafe { m.__bindgen_anon_1.name })
        };
        out.push(MenuEntry { value: index, name });
    }
    out
}

/// Runs `VIDIOC_G_EXT_CTRLS` or `VIDIOC_S_EXT_CTRLS` on one control.
fn ext_ctrl(fd: i32, request: vidioc::_IOC_TYPE, control: &mut v4l2_ext_control) -> io::Result<()> {
    let mut list = v4l2_ext_controls {
        count: 1,
        controls: control,
        // SAFETY: plain C data; all-zero selects the current values (which = 0).
        ..unsafe { std::mem::zeroed() }
    };
    // SAFETY: the ioctl reads `list` and the one v4l2_ext_control it points to, both alive
    // for the whole call; a scalar control carries its value inline, so no other pointer
    // is followed.
    unsafe {
        v4l2::ioctl(
            fd,
            request,
            &mut list as *mut v4l2_ext_controls as *mut c_void,
        )
    }
}

fn get(fd: i32, id: u32, kind: u32) -> io::Result<i64> {
    let mut c = v4l2_ext_control {
        id,
        // SAFETY: plain C data; all-zero is a valid request.
        ..unsafe { std::mem::zeroed() }
    };
    ext_ctrl(fd, vidioc::VIDIOC_G_EXT_CTRLS, &mut c)?;
    // SAFETY: the kernel fills `value64` for 64-bit controls and `value` for the others.
    Ok(unsafe {
        if kind == TYPE_INTEGER64 {
            c.__bindgen_anon_1.value64
        } else {
            i64::from(c.__bindgen_anon_1.value)
        }
    })
}

/// Sets control `id` (of `V4L2_CTRL_TYPE_*` `kind`) to `value`.
pub fn set(fd: i32, id: u32, kind: u32, value: i64) -> io::Result<()> {
    let mut c = v4l2_ext_control {
        id,
        // SAFETY: plain C data; all-zero is a valid request.
        ..unsafe { std::mem::zeroed() }
    };
    if kind == TYPE_INTEGER64 {
        c.__bindgen_anon_1.value64 = value;
    } else {
        c.__bindgen_anon_1.value = i32::try_from(value)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "out of 32-bit range"))?;
    }
    ext_ctrl(fd, vidioc::VIDIOC_S_EXT_CTRLS, &mut c)
}

/// A control value as the number V4L2 takes.
pub fn raw_value(value: Value) -> i64 {
    match value {
        Value::Bool(b) => i64::from(b),
        Value::Int(i) => i,
        Value::Float(f) => f.round() as i64,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_the_ones_v4l2_ctl_prints() {
        for (driver, ctl) in [
            ("Brightness", "brightness"),
            ("White Balance, Automatic", "white_balance_automatic"),
            ("Focus, Automatic Continuous", "focus_automatic_continuous"),
            ("Power Line Frequency", "power_line_frequency"),
            ("  Gain (dB) ", "gain_db"),
            ("Horizontal Flip", "horizontal_flip"),
        ] {
            assert_eq!(ctl_name(driver), ctl);
        }
    }

    #[test]
    fn flip_ids_are_the_kernel_uapi_values() {
        // V4L2_CID_BASE = V4L2_CTRL_CLASS_USER | 0x900 = 0x00980900.
        assert_eq!(CID_HFLIP, 0x0098_0900 + 20);
        assert_eq!(CID_VFLIP, 0x0098_0900 + 21);
    }
}
