//! `mount.sopfs STORE MOUNTPOINT [-o OPTIONS]` (built as `mount-sopfs`; install
//! it as `/sbin/mount.sopfs`): the helper mount(8) runs for
//! `mount -t sopfs` and fstab lines of type `sopfs`. It starts
//! `sopfs mount --background` (found next to this binary, else on PATH) and
//! returns once the mount answers.

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let call = match mount_tools::fstab::parse(&args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("mount.sopfs: {e}");
            std::process::exit(1);
        }
    };
    let sibling = std::env::current_exe()
        .ok()
        .and_then(|p| std::fs::canonicalize(p).ok())
        .map(|p| p.with_file_name("sopfs"))
        .filter(|p| p.exists());
    let program = sibling.map_or_else(|| "sopfs".into(), |p| p.into_os_string());
    match std::process::Command::new(&program)
        .args(call.args())
        .status()
    {
        Ok(s) if s.success() => {}
        Ok(s) => std::process::exit(s.code().unwrap_or(1)),
        Err(e) => {
            eprintln!("mount.sopfs: cannot run {}: {e}", program.to_string_lossy());
            std::process::exit(1);
        }
    }
}
