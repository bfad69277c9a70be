//! With the `dpdk` feature only: compiles the C shim over DPDK's inline
//! functions (src/dpdk/shim.c) and links the four DPDK libraries it calls.
//! The poll-mode drivers are loaded by the EAL at run time from DPDK's
//! driver directory, so none is linked here.

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    #[cfg(feature = "dpdk")]
    dpdk();
}

#[cfg(feature = "dpdk")]
fn dpdk() {
    println!("cargo:rerun-if-changed=src/dpdk/shim.c");
    let lib = pkg_config::Config::new()
        .cargo_metadata(false)
        .probe("libdpdk")
        .unwrap_or_else(|e| panic!("the dpdk feature needs DPDK's headers (dpdk-dev): {e}"));
    let mut build = cc::Build::new();
    build.file("src/dpdk/shim.c").warnings(true);
    for path in &lib.include_paths {
        build.include(path);
    }
    // DPDK's headers are built for this baseline (`pkg-config --cflags libdpdk`).
    build.flag_if_supported("-march=corei7");
    build.compile("fastcapa_dpdk_shim");
    for path in &lib.link_paths {
        println!("cargo:rustc-link-search=native={}", path.display());
    }
    for name in ["rte_ethdev", "rte_mbuf", "rte_mempool", "rte_eal"] {
        println!("cargo:rustc-link-lib=dylib={name}");
    }
}
