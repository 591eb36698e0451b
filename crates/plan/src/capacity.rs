//! How many sequences fit, how many servers a load needs at its peak, and
//! what owning them costs against renting tokens from a cloud API.

use serde::{Deserialize, Serialize};

use crate::hardware::{Device, Kind};

/// Prices and terms of the cost comparison. The defaults are stated
/// assumptions, to be replaced by an operator's own numbers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CostInputs {
    pub years: f64,
    pub electricity_usd_per_kwh: f64,
    /// Power usage effectiveness: facility power per unit of IT power.
    pub pue: f64,
    /// Share of the time the devices draw full power.
    pub utilization: f64,
    /// Rack space, support and administration per server and year.
    pub operations_usd_per_server_year: f64,
    /// The host a GPU server's cards sit in (CPU, memory, chassis).
    pub gpu_host_usd: f64,
    /// Cloud API list prices per million tokens.
    pub cloud_input_usd_per_mtok: f64,
    pub cloud_output_usd_per_mtok: f64,
}

impl CostInputs {
    pub fn validate(&self) -> Result<(), crate::PlanError> {
        let bad = |what: String| Err(crate::PlanError::Cost(what));
        let non_negative = [
            ("electricity price", self.electricity_usd_per_kwh),
            ("operations cost", self.operations_usd_per_server_year),
            ("GPU host price", self.gpu_host_usd),
            ("cloud input price", self.cloud_input_usd_per_mtok),
            ("cloud output price", self.cloud_output_usd_per_mtok),
        ];
        for (name, value) in non_negative {
            if !(value.is_finite() && value >= 0.0) {
                return bad(format!("the {name} must be zero or more (got {value})"));
            }
        }
        if !(self.years.is_finite() && self.years > 0.0) {
            return bad(format!(
                "the period must be more than 0 years (got {})",
                self.years
            ));
        }
        if !(self.pue.is_finite() && self.pue >= 1.0) {
            return bad(format!("the PUE must be at least 1 (got {})", self.pue));
        }
        if !(self.utilization > 0.0 && self.utilization <= 1.0) {
            return bad(format!(
                "the utilization must be above 0 and at most 1 (got {})",
                self.utilization
            ));
        }
        Ok(())
    }
}

impl Default for CostInputs {
    fn default() -> Self {
        Self {
            years: 3.0,
            electricity_usd_per_kwh: 0.15,
            pue: 1.4,
            utilization: 1.0,
            operations_usd_per_server_year: 1_500.0,
            gpu_host_usd: 5_000.0,
            cloud_input_usd_per_mtok: 0.50,
            cloud_output_usd_per_mtok: 1.50,
        }
    }
}

/// Servers for a load.
#[derive(Debug, Clone, Serialize)]
pub struct Capacity {
    /// Most sequences of the full context that fit in one server's memory.
    pub max_concurrency: u32,
    /// Sequences each server runs at once: the most that fit, fewer if
    /// each stream would then decode slower than the floor asked for.
    pub batch: u32,
    /// Requests one server completes per second at that batch.
    pub requests_per_second: f64,
    /// The average load times the peak factor.
    pub peak_qps: f64,
    pub servers: u32,
}

/// Requests per second one server completes with `batch` streams: prompts
/// are computed one at a time at the prefill rate, replies share the
/// batch's aggregate decode rate.
pub fn requests_per_second(
    prompt_tokens: u32,
    output_tokens: u32,
    prefill_tps: f64,
    aggregate_decode_tps: f64,
) -> f64 {
    let seconds =
        f64::from(prompt_tokens) / prefill_tps + f64::from(output_tokens) / aggregate_decode_tps;
    if seconds > 0.0 {
        1.0 / seconds
    } else {
        f64::INFINITY
    }
}

/// Servers that carry `qps` × `peak_factor` at `per_server` requests per
/// second each; at least one. `None` when a server carries nothing (no
/// number of them is enough) or the count is beyond counting.
pub fn servers_needed(qps: f64, peak_factor: f64, per_server: f64) -> Option<u32> {
    if qps == 0.0 {
        return Some(1);
    }
    let needed = (qps * peak_factor / per_server).ceil();
    (needed.is_finite() && needed <= f64::from(u32::MAX)).then(|| needed.max(1.0) as u32)
}

/// Total cost of ownership against the cloud.
#[derive(Debug, Clone, Serialize)]
pub struct Cost {
    pub years: f64,
    pub hardware_usd: f64,
    pub power_usd: f64,
    pub operations_usd: f64,
    pub tco_usd: f64,
    /// Tokens (prompt and output) the average load moves over the period.
    pub tokens: f64,
    pub self_hosted_usd_per_mtok: f64,
    /// The same tokens bought from the cloud API.
    pub cloud_usd: f64,
    /// Monthly tokens at which the cloud bill equals the owned servers'
    /// monthly cost: above it, owning is cheaper.
    pub break_even_tokens_per_month: f64,
}

/// What `servers` servers of `devices` × `device` cost over the period,
/// against buying the same average load's tokens.
pub fn cost(
    inputs: &CostInputs,
    device: &Device,
    devices: u32,
    servers: u32,
    qps: f64,
    prompt_tokens: u32,
    output_tokens: u32,
) -> Cost {
    let servers_f = f64::from(servers);
    let cards = servers_f * f64::from(devices);
    let host = match device.kind {
        Kind::Gpu => inputs.gpu_host_usd,
        Kind::Cpu => 0.0,
    };
    let hardware = cards * device.price_usd + servers_f * host;
    let hours = inputs.years * 365.0 * 24.0;
    let kwh = cards * device.power_w / 1000.0 * hours * inputs.utilization * inputs.pue;
    let power = kwh * inputs.electricity_usd_per_kwh;
    let operations = servers_f * inputs.operations_usd_per_server_year * inputs.years;
    let tco = hardware + power + operations;
    let seconds = hours * 3600.0;
    let requests = qps * seconds;
    let tokens = requests * f64::from(prompt_tokens + output_tokens);
    let per_request = (f64::from(prompt_tokens) * inputs.cloud_input_usd_per_mtok
        + f64::from(output_tokens) * inputs.cloud_output_usd_per_mtok)
        / 1e6;
    let cloud = requests * per_request;
    let months = inputs.years * 12.0;
    let tokens_per_request = f64::from(prompt_tokens + output_tokens);
    let break_even = if per_request > 0.0 {
        tco / months / per_request * tokens_per_request
    } else {
        f64::INFINITY
    };
    Cost {
        years: inputs.years,
        hardware_usd: hardware,
        power_usd: power,
        operations_usd: operations,
        tco_usd: tco,
        tokens,
        self_hosted_usd_per_mtok: if tokens > 0.0 {
            tco / tokens * 1e6
        } else {
            f64::INFINITY
        },
        cloud_usd: cloud,
        break_even_tokens_per_month: break_even,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hardware::Catalog;

    #[test]
    fn nonsense_cost_inputs_are_refused_by_name() {
        assert!(CostInputs::default().validate().is_ok());
        type Break = fn(&mut CostInputs);
        let cases: [(Break, &str); 4] = [
            (|c| c.years = 0.0, "period"),
            (|c| c.pue = 0.5, "PUE"),
            (|c| c.electricity_usd_per_kwh = -1.0, "electricity"),
            (|c| c.utilization = f64::NAN, "utilization"),
        ];
        for (break_it, named) in cases {
            let mut c = CostInputs::default();
            break_it(&mut c);
            let e = c.validate().unwrap_err().to_string();
            assert!(e.contains(named), "{e}");
        }
    }

    #[test]
    fn servers_cover_three_times_the_average() {
        assert_eq!(servers_needed(10.0, 3.0, 4.0), Some(8));
        assert_eq!(servers_needed(0.01, 3.0, 4.0), Some(1));
        assert_eq!(
            servers_needed(0.0, 3.0, 0.0),
            Some(1),
            "no load needs one server"
        );
        // Regression: a server that carries nothing was sized as one.
        assert_eq!(servers_needed(10.0, 3.0, 0.0), None);
        assert_eq!(servers_needed(1e12, 3.0, 1e-3), None);
    }

    #[test]
    fn requests_per_second_adds_prefill_and_shared_decode() {
        // 1000 prompt tokens at 1000/s and 100 output tokens at 100/s: 2 s.
        assert_eq!(requests_per_second(1000, 100, 1000.0, 100.0), 0.5);
    }

    #[test]
    fn tco_adds_hardware_power_and_operations() {
        let d = Catalog::default().get("h100-80gb").unwrap().clone();
        let c = cost(&CostInputs::default(), &d, 2, 3, 1.0, 1000, 200);
        assert_eq!(c.hardware_usd, 3.0 * (2.0 * 25_000.0 + 5_000.0));
        // 6 cards × 0.7 kW × 26,280 h × 1.4 PUE × $0.15.
        assert!((c.power_usd - 6.0 * 0.7 * 26_280.0 * 1.4 * 0.15).abs() < 1e-6);
        assert_eq!(c.operations_usd, 3.0 * 1_500.0 * 3.0);
        let months = 36.0;
        let per_request = (1000.0 * 0.5 + 200.0 * 1.5) / 1e6;
        let expect = c.tco_usd / months / per_request * 1200.0;
        assert!((c.break_even_tokens_per_month - expect).abs() / expect < 1e-12);
        // At the break-even volume, a month of cloud costs a month of TCO.
        let cloud_month = c.break_even_tokens_per_month / 1200.0 * per_request;
        assert!((cloud_month - c.tco_usd / months).abs() < 1e-6);
    }
}
