//! The sipvip command line.
use anyhow::Result;
use clap::Parser;

#[derive(Parser)]
#[command(
    name = "sipvip",
    version,
    about = "XDP VIP steering and SNAT for a hot-standby SIP server pair"
)]
enum Cli {
    /// Print the map layout the embedded datapath uses.
    Layout,
}

fn main() -> Result<()> {
    match Cli::parse() {
        Cli::Layout => {
            for name in sipvip_common::map_names::ALL {
                println!("{name}");
            }
            println!("object: {} bytes", sipvip::datapath::OBJECT.len());
        }
    }
    Ok(())
}
