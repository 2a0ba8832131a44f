//! `sopfs-macro SCRIPT [--json] [ARGS...]`: runs the macro whose file under a
//! mount's `/.macros` the kernel passes as SCRIPT (from its shebang line).
//! Output lines on stdout; on failure the failing step on stderr and exit 1.

use mount_tools::{decode, request, Answer};
use std::path::PathBuf;

fn main() {
    let mut args = std::env::args().skip(1);
    let Some(script) = args.next().map(PathBuf::from) else {
        eprintln!("sopfs-macro: usage: sopfs-macro /MOUNT/.macros/NAME [--json] [ARGS...]");
        std::process::exit(2);
    };
    let mut rest: Vec<String> = args.collect();
    let json = rest.first().is_some_and(|a| a == "--json");
    if json {
        rest.remove(0);
    }
    let (Some(dir), Some(name)) = (script.parent(), script.file_name()) else {
        eprintln!("sopfs-macro: {} is not a macro file", script.display());
        std::process::exit(2);
    };
    if dir.file_name().is_none_or(|d| d != ".macros") {
        eprintln!(
            "sopfs-macro: {} is not under a mount's /.macros",
            script.display()
        );
        std::process::exit(2);
    }
    let name = name.to_string_lossy();
    let answer = match request(dir, &name, &rest) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("sopfs-macro: {}: {e}", dir.display());
            std::process::exit(1);
        }
    };
    if json {
        print!("{answer}");
    }
    match decode(&answer) {
        Ok(Answer::Ok(lines)) => {
            if !json {
                for l in lines {
                    println!("{l}");
                }
            }
        }
        Ok(Answer::Failed { step, error }) => {
            if !json {
                eprintln!("sopfs-macro: {name}: {step}: {error}");
            }
            std::process::exit(1);
        }
        Err(e) => {
            eprintln!("sopfs-macro: {e}");
            std::process::exit(1);
        }
    }
}
