//! The dashboard's third-party assets come from npm (`web/package.json`, pinned by its
//! lockfile) and are embedded in the binary. A fresh clone gets them with `npm ci` in `web/`
//! (`./dev` does it; this script does it too when they are missing).

use std::path::Path;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=../../web/package-lock.json");
    println!("cargo:rerun-if-changed=../../web/node_modules/chart.js/dist/chart.umd.min.js");
    let web = Path::new("../../web");
    if web
        .join("node_modules/chart.js/dist/chart.umd.min.js")
        .exists()
    {
        return;
    }
    let status = Command::new("npm")
        .args(["ci", "--ignore-scripts", "--no-audit", "--no-fund"])
        .current_dir(web)
        .status();
    match status {
        Ok(s) if s.success() => {}
        other => panic!(
            "the dashboard's npm packages are missing and `npm ci` in web/ failed ({other:?}); \
             run `npm ci` in web/ (Node.js and npm are needed to build the dashboard)"
        ),
    }
}
