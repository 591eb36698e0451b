//! The hardware catalog: each device's memory, bandwidth, peak throughput,
//! power and price, built in and extendable from a TOML file.

use serde::{Deserialize, Serialize};

use crate::PlanError;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// Weights and KV in host memory, computed by the CPU's cores.
    Cpu,
    /// Weights and KV in the card's own memory.
    Gpu,
}

/// One device (a GPU card, or a CPU with its memory) as the planner sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Device {
    pub name: String,
    pub kind: Kind,
    /// What the name stands for, for people.
    #[serde(default)]
    pub description: String,
    pub memory_gb: f64,
    /// Peak memory bandwidth, GB/s (10^9 bytes).
    pub bandwidth_gb_s: f64,
    /// Dense fp16 peak, TFLOPS (tensor cores on GPUs; FMA units on CPUs).
    pub fp16_tflops: f64,
    /// Dense int8 peak, TOPS: llama.cpp multiplies quantized weights with
    /// 8-bit activations, so quantized prefill runs against this peak.
    pub int8_tops: f64,
    /// Board power (GPU) or package power (CPU), watts.
    pub power_w: f64,
    /// Street price of one device, USD.
    pub price_usd: f64,
}

impl Device {
    pub fn memory_bytes(&self) -> u64 {
        (self.memory_gb * 1e9) as u64
    }

    fn validate(&self) -> Result<(), PlanError> {
        let numbers = [
            ("memory_gb", self.memory_gb),
            ("bandwidth_gb_s", self.bandwidth_gb_s),
            ("fp16_tflops", self.fp16_tflops),
            ("int8_tops", self.int8_tops),
        ];
        for (field, value) in numbers {
            if !(value.is_finite() && value > 0.0) {
                return Err(PlanError::Hardware(format!(
                    "device {}: {field} must be a positive number",
                    self.name
                )));
            }
        }
        if !(self.power_w >= 0.0 && self.price_usd >= 0.0) {
            return Err(PlanError::Hardware(format!(
                "device {}: power_w and price_usd cannot be negative",
                self.name
            )));
        }
        Ok(())
    }

    /// A CPU from what the operating system reports: `cores` at `ghz`, with
    /// AVX-512 or AVX2, and `memory_gb` of RAM. Peaks are per core × cores:
    /// an AVX2 core retires two 8-lane fp32 FMAs a cycle (32 flop) and two
    /// 32-lane 8-bit multiply-adds (128 op); AVX-512 doubles the lanes.
    /// Bandwidth is what one core of a server part can stream (about 12
    /// GB/s), times the cores, up to `channel_limit_gb_s`, the sockets'
    /// memory channels.
    pub fn cpu(
        name: &str,
        description: &str,
        cores: u32,
        ghz: f64,
        avx512: bool,
        memory_gb: f64,
        channel_limit_gb_s: f64,
    ) -> Self {
        let lanes = if avx512 { 2.0 } else { 1.0 };
        let cores_f = f64::from(cores.max(1));
        Self {
            name: name.to_string(),
            kind: Kind::Cpu,
            description: description.to_string(),
            memory_gb,
            bandwidth_gb_s: (12.0 * cores_f).min(channel_limit_gb_s),
            fp16_tflops: cores_f * ghz * 32.0 * lanes / 1000.0,
            int8_tops: cores_f * ghz * 128.0 * lanes / 1000.0,
            // A server core draws about 5 W under vector load.
            power_w: 5.0 * cores_f,
            price_usd: 0.0,
        }
    }
}

/// Public spec-sheet figures (dense, no sparsity) and typical 2026 street
/// prices. The CPU entry is this build machine's class: two Zen 3 cores of
/// an AMD EPYC (AVX2) at 2.45 GHz with 24 GB, as a cloud VM rents it.
fn builtin() -> Vec<Device> {
    let gpu = |name: &str, description: &str, spec: [f64; 6]| Device {
        name: name.into(),
        kind: Kind::Gpu,
        description: description.into(),
        memory_gb: spec[0],
        bandwidth_gb_s: spec[1],
        fp16_tflops: spec[2],
        int8_tops: spec[3],
        power_w: spec[4],
        price_usd: spec[5],
    };
    let mut epyc = Device::cpu(
        "epyc-2c",
        "AMD EPYC Zen 3, 2 vCPU (AVX2), 24 GB: this build machine's class",
        2,
        2.45,
        false,
        24.0,
        200.0,
    );
    // A share of a shared host: its price is what two vCPUs cost to buy
    // outright as part of a 64-core server (~$10k).
    epyc.price_usd = 320.0;
    vec![
        epyc,
        gpu(
            "a100-40gb",
            "NVIDIA A100 40 GB SXM",
            [40.0, 1555.0, 312.0, 624.0, 400.0, 8_000.0],
        ),
        gpu(
            "a100-80gb",
            "NVIDIA A100 80 GB SXM",
            [80.0, 2039.0, 312.0, 624.0, 400.0, 12_000.0],
        ),
        gpu(
            "h100-80gb",
            "NVIDIA H100 80 GB SXM",
            [80.0, 3350.0, 989.0, 1979.0, 700.0, 25_000.0],
        ),
        gpu(
            "h200",
            "NVIDIA H200 141 GB SXM",
            [141.0, 4800.0, 989.0, 1979.0, 700.0, 32_000.0],
        ),
        gpu(
            "l40s",
            "NVIDIA L40S 48 GB",
            [48.0, 864.0, 362.0, 733.0, 350.0, 8_000.0],
        ),
        gpu(
            "rtx-4090",
            "NVIDIA GeForce RTX 4090 24 GB",
            [24.0, 1008.0, 165.0, 661.0, 450.0, 1_800.0],
        ),
        gpu(
            "rtx-3090",
            "NVIDIA GeForce RTX 3090 24 GB",
            [24.0, 936.0, 71.0, 284.0, 350.0, 900.0],
        ),
        gpu(
            "t4",
            "NVIDIA T4 16 GB (a 16 GB card)",
            [16.0, 320.0, 65.0, 130.0, 70.0, 1_200.0],
        ),
    ]
}

/// The devices the planner knows: built-in entries, then a file's, which
/// replace built-in entries of the same name.
#[derive(Debug, Clone)]
pub struct Catalog {
    devices: Vec<Device>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CatalogFile {
    #[serde(default)]
    device: Vec<Device>,
}

impl Default for Catalog {
    fn default() -> Self {
        Self { devices: builtin() }
    }
}

impl Catalog {
    /// Adds (or replaces) devices from a TOML text of `[[device]]` tables.
    pub fn extend_from_toml(&mut self, text: &str, origin: &str) -> Result<(), PlanError> {
        let file: CatalogFile = toml::from_str(text)
            .map_err(|e| PlanError::Hardware(format!("{origin}: {}", e.message())))?;
        for device in file.device {
            device.validate().map_err(|e| match e {
                PlanError::Hardware(why) => PlanError::Hardware(format!("{origin}: {why}")),
                other => other,
            })?;
            self.add(device);
        }
        Ok(())
    }

    /// Adds a device, replacing any of the same name.
    pub fn add(&mut self, device: Device) {
        self.devices
            .retain(|d| !d.name.eq_ignore_ascii_case(&device.name));
        self.devices.push(device);
    }

    pub fn devices(&self) -> &[Device] {
        &self.devices
    }

    /// The device of this name (case-insensitive), or an error listing the
    /// known ones.
    pub fn get(&self, name: &str) -> Result<&Device, PlanError> {
        self.devices
            .iter()
            .find(|d| d.name.eq_ignore_ascii_case(name))
            .ok_or_else(|| PlanError::UnknownHardware {
                name: name.to_string(),
                known: self
                    .devices
                    .iter()
                    .map(|d| d.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_catalog_covers_the_classes_operators_ask_about() {
        let catalog = Catalog::default();
        for name in [
            "epyc-2c",
            "a100-40gb",
            "a100-80gb",
            "h100-80gb",
            "h200",
            "l40s",
            "rtx-4090",
            "rtx-3090",
            "t4",
        ] {
            let d = catalog.get(name).unwrap();
            d.validate().unwrap();
        }
        assert!(catalog.devices().iter().any(|d| d.memory_gb == 16.0));
    }

    #[test]
    fn unknown_hardware_lists_what_is_known() {
        let e = Catalog::default().get("tpu-v9").unwrap_err().to_string();
        assert!(e.contains("tpu-v9") && e.contains("h100-80gb"), "{e}");
    }

    #[test]
    fn a_file_adds_and_replaces_devices() {
        let mut catalog = Catalog::default();
        let text = r#"
            [[device]]
            name = "mi300x"
            kind = "gpu"
            memory_gb = 192
            bandwidth_gb_s = 5300
            fp16_tflops = 1307
            int8_tops = 2615
            power_w = 750
            price_usd = 15000

            [[device]]
            name = "T4"
            kind = "gpu"
            memory_gb = 16
            bandwidth_gb_s = 300
            fp16_tflops = 65
            int8_tops = 130
            power_w = 70
            price_usd = 900
        "#;
        catalog.extend_from_toml(text, "extra.toml").unwrap();
        assert_eq!(catalog.get("mi300x").unwrap().memory_gb, 192.0);
        assert_eq!(catalog.get("t4").unwrap().price_usd, 900.0);
        assert_eq!(
            catalog
                .devices()
                .iter()
                .filter(|d| d.name.eq_ignore_ascii_case("t4"))
                .count(),
            1
        );
    }

    #[test]
    fn a_bad_file_names_itself_and_the_field() {
        let mut catalog = Catalog::default();
        let e = catalog
            .extend_from_toml("[[device]]\nname = \"x\"\nkind = \"gpu\"\n", "extra.toml")
            .unwrap_err()
            .to_string();
        assert!(e.contains("extra.toml") && e.contains("memory_gb"), "{e}");
        let zero = "[[device]]\nname='z'\nkind='gpu'\nmemory_gb=0\nbandwidth_gb_s=1\nfp16_tflops=1\nint8_tops=1\npower_w=1\nprice_usd=1\n";
        let e = catalog
            .extend_from_toml(zero, "extra.toml")
            .unwrap_err()
            .to_string();
        assert!(e.contains("memory_gb must be a positive"), "{e}");
    }

    #[test]
    fn cpu_peaks_follow_cores_and_vector_width() {
        let avx2 = Device::cpu("c", "", 2, 2.5, false, 8.0, 200.0);
        assert_eq!(avx2.fp16_tflops, 0.16);
        assert_eq!(avx2.bandwidth_gb_s, 24.0);
        let wide = Device::cpu("c", "", 64, 2.5, true, 8.0, 200.0);
        assert_eq!(wide.bandwidth_gb_s, 200.0);
        assert_eq!(wide.int8_tops, 64.0 * 2.5 * 256.0 / 1000.0);
    }
}
