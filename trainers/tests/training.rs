//! The schedule against its closed form; global-norm clipping against a gradient known in
//! closed form; the host AdamW against burn's.

use burn::backend::{Autodiff, Flex};
use burn::module::AutodiffModule;
use burn::nn::{Linear, LinearConfig};
use burn::optim::GradientsParams;
use burn::tensor::Tensor;
use otpref_trainers::training::{clip_global_norm, WarmupCosine};

type A = Autodiff<Flex>;

#[test]
fn warmup_then_cosine() {
    let schedule = WarmupCosine {
        peak: 1e-3,
        warmup_steps: 10,
        total_steps: 110,
        final_ratio: 0.1,
    };
    let close = |a: f64, b: f64| (a - b).abs() < 1e-12;
    assert!(close(schedule.at(0), 1e-4));
    assert!(close(schedule.at(9), 1e-3));
    assert!(close(schedule.at(10), 1e-3));
    // Half-way through the decay the cosine factor is 1/2.
    assert!(close(schedule.at(60), 1e-3 * (0.1 + 0.9 * 0.5)));
    assert!(close(schedule.at(110), 1e-4));
    assert!(close(schedule.at(500), 1e-4));
}

fn linear_and_grads() -> (Linear<A>, GradientsParams) {
    let device = Default::default();
    let linear = LinearConfig::new(3, 2).init::<A>(&device);
    let x = Tensor::<A, 2>::from_floats([[1.0, 2.0, 3.0]], &device);
    // d(sum(xW + b))/dW[i][j] = x[i]; /db[j] = 1: squared norm 2·(1 + 4 + 9) + 2 = 30.
    let grads = linear.forward(x).sum().backward();
    let grads = GradientsParams::from_grads(grads, &linear);
    (linear, grads)
}

#[test]
fn global_norm_is_the_norm_over_all_parameters() {
    let (linear, grads) = linear_and_grads();
    let (_, norm) = clip_global_norm(&linear, grads, None);
    assert!((norm - 30f64.sqrt()).abs() < 1e-5, "{norm}");
}

#[test]
fn clipping_scales_every_gradient_by_one_factor() {
    let (linear, grads) = linear_and_grads();
    let (clipped, norm) = clip_global_norm(&linear, grads, Some(1.0));
    assert!((norm - 30f64.sqrt()).abs() < 1e-5);
    let weight = clipped
        .get::<Flex, 2>(linear.weight.id)
        .unwrap()
        .into_data()
        .to_vec::<f32>()
        .unwrap();
    let bias = clipped
        .get::<Flex, 1>(linear.bias.as_ref().unwrap().id)
        .unwrap()
        .into_data()
        .to_vec::<f32>()
        .unwrap();
    let factor = 1.0 / (30f32.sqrt() + 1e-6);
    let expected_weight = [1.0, 1.0, 2.0, 2.0, 3.0, 3.0].map(|g: f32| g * factor);
    for (a, e) in weight.iter().zip(expected_weight) {
        assert!((a - e).abs() < 1e-6, "{weight:?}");
    }
    for b in bias {
        assert!((b - factor).abs() < 1e-6);
    }
    // Below the threshold nothing changes.
    let (linear, grads) = linear_and_grads();
    let (kept, _) = clip_global_norm(&linear, grads, Some(100.0));
    let bias = kept
        .get::<Flex, 1>(linear.valid().bias.unwrap().id)
        .unwrap()
        .into_data()
        .to_vec::<f32>()
        .unwrap();
    assert_eq!(bias, vec![1.0, 1.0]);
}

/// `HostAdamW` (the one-pass update on host memory) gives burn's `AdamW`'s parameters to the
/// bit over several steps, with and without weight decay, and its state resumes under burn's.
/// The weight (600 × 250) spans several of the update's parallel chunks, the last one partial.
#[test]
fn host_adamw_is_burns_adamw_to_the_bit() {
    use burn::optim::{AdamWConfig, Optimizer};
    use burn::record::{FullPrecisionSettings, NamedMpkBytesRecorder, Recorder};
    use burn::tensor::TensorData;
    use otpref_trainers::training::HostAdamW;
    const WIDTH_IN: usize = 600;

    fn grads_of(model: &Linear<A>, step: usize) -> GradientsParams {
        // Inputs from a formula, not the backend's random stream (other tests draw from it).
        let values: Vec<f32> = (0..5 * WIDTH_IN)
            .map(|i| ((i * 7 + step * 13) % 11) as f32 / 2.0 - 2.5)
            .collect();
        let x =
            Tensor::<A, 2>::from_data(TensorData::new(values, [5, WIDTH_IN]), &Default::default());
        let loss = model.forward(x).powi_scalar(2).mean();
        GradientsParams::from_grads(loss.backward(), model)
    }
    fn floats(model: &Linear<A>) -> Vec<f32> {
        let mut all: Vec<f32> = model.weight.val().into_data().to_vec().unwrap();
        all.extend(
            model
                .bias
                .as_ref()
                .unwrap()
                .val()
                .into_data()
                .to_vec::<f32>()
                .unwrap(),
        );
        all
    }
    for weight_decay in [0.0f32, 0.1] {
        let device = Default::default();
        let start: Linear<A> = LinearConfig::new(WIDTH_IN, 250).init(&device);
        // Drawn now: a lazily initialised module's clones would each draw their own.
        let first_values = floats(&start);
        let burn_config = AdamWConfig::new()
            .with_weight_decay(weight_decay)
            .with_epsilon(1e-8);
        let mut reference = burn_config.init::<A, Linear<A>>();
        let mut host = HostAdamW::new(weight_decay, 1e-8, true).init::<A, Linear<A>>();
        let (mut expected, mut model) = (start.clone(), start.clone());
        for step in 0..4 {
            let lr = 1e-2 / (step + 1) as f64;
            expected = reference.step(lr, expected.clone(), grads_of(&expected, step));
            model = host.step(lr, model.clone(), grads_of(&model, step));
            assert_eq!(
                floats(&expected),
                floats(&model),
                "wd {weight_decay} step {step}"
            );
        }
        // burn's optimizer continues from the host optimizer's saved state (the checkpoints'
        // recorder): the files agree, so runs resume across the two.
        let recorder = NamedMpkBytesRecorder::<FullPrecisionSettings>::new();
        let bytes = recorder.record(host.to_record(), ()).unwrap();
        let mut resumed = burn_config.init::<A, Linear<A>>();
        resumed = resumed.load_record(recorder.load(bytes, &device).unwrap());
        let expected = reference.step(1e-3, expected.clone(), grads_of(&expected, 9));
        let model = resumed.step(1e-3, model.clone(), grads_of(&model, 9));
        assert_eq!(
            floats(&expected),
            floats(&model),
            "wd {weight_decay} resumed"
        );
        assert!(first_values != floats(&model), "the parameters moved");
    }
}
