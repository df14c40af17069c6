//! The graph builder: nodes and initializers in the order they are added
//! (so the same network always encodes to the same bytes), and the
//! attribute, shape and convolution helpers every fragment uses.

use super::onnx_proto as onnx;
use super::onnx_proto::attribute_proto::AttributeType;
use super::onnx_proto::tensor_proto::DataType;
use super::onnx_proto::tensor_shape_proto::{Dimension, dimension};

/// Sizes are validated against real weight vectors, so they fit in i64.
pub(super) fn dim(v: usize) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

#[derive(Default)]
pub(super) struct GraphBuilder {
    pub(super) nodes: Vec<onnx::NodeProto>,
    pub(super) inits: Vec<onnx::TensorProto>,
}

impl GraphBuilder {
    pub(super) fn node(
        &mut self,
        op: &str,
        name: &str,
        inputs: &[&str],
        output: &str,
        attribute: Vec<onnx::AttributeProto>,
    ) {
        self.nodes.push(onnx::NodeProto {
            input: inputs.iter().map(|s| (*s).to_owned()).collect(),
            output: vec![output.to_owned()],
            name: Some(name.to_owned()),
            op_type: Some(op.to_owned()),
            domain: Some(String::new()),
            attribute,
            ..Default::default()
        });
    }

    pub(super) fn init_f32(&mut self, name: &str, dims: &[i64], data: &[f32]) {
        self.inits.push(onnx::TensorProto {
            dims: dims.to_vec(),
            data_type: Some(DataType::Float as i32),
            name: Some(name.to_owned()),
            raw_data: Some(data.iter().flat_map(|x| x.to_le_bytes()).collect()),
            ..Default::default()
        });
    }

    pub(super) fn init_i64(&mut self, name: &str, dims: &[i64], data: &[i64]) {
        self.inits.push(onnx::TensorProto {
            dims: dims.to_vec(),
            data_type: Some(DataType::Int64 as i32),
            name: Some(name.to_owned()),
            raw_data: Some(data.iter().flat_map(|x| x.to_le_bytes()).collect()),
            ..Default::default()
        });
    }
}

/// Attributes of a 2-D `Conv` or `ConvTranspose` over `[N, C, 1, L]`:
/// kernel `[1, kernel]`, strides `[1, stride]`, pads `[0, left, 0, right]`.
pub(super) fn conv_attrs(
    kernel: usize,
    stride: usize,
    [left, right]: [usize; 2],
    output_padding: Option<usize>,
) -> Vec<onnx::AttributeProto> {
    let mut attrs = vec![
        attr_ints("dilations", vec![1, 1]),
        attr_int("group", 1),
        attr_ints("kernel_shape", vec![1, dim(kernel)]),
    ];
    if let Some(op) = output_padding {
        attrs.push(attr_ints("output_padding", vec![0, dim(op)]));
    }
    attrs.push(attr_ints("pads", vec![0, dim(left), 0, dim(right)]));
    attrs.push(attr_ints("strides", vec![1, dim(stride)]));
    attrs
}

pub(super) fn attr_int(name: &str, i: i64) -> onnx::AttributeProto {
    onnx::AttributeProto {
        name: Some(name.to_owned()),
        r#type: Some(AttributeType::Int as i32),
        i: Some(i),
        ..Default::default()
    }
}

pub(super) fn attr_ints(name: &str, ints: Vec<i64>) -> onnx::AttributeProto {
    onnx::AttributeProto {
        name: Some(name.to_owned()),
        r#type: Some(AttributeType::Ints as i32),
        ints,
        ..Default::default()
    }
}

pub(super) fn attr_float(name: &str, f: f32) -> onnx::AttributeProto {
    onnx::AttributeProto {
        name: Some(name.to_owned()),
        r#type: Some(AttributeType::Float as i32),
        f: Some(f),
        ..Default::default()
    }
}

pub(super) enum DimSpec {
    Param(&'static str),
    Value(i64),
}

pub(super) fn value_info(name: &str, dims: &[DimSpec]) -> onnx::ValueInfoProto {
    let dim = dims
        .iter()
        .map(|d| Dimension {
            value: Some(match d {
                DimSpec::Param(p) => dimension::Value::DimParam((*p).to_owned()),
                DimSpec::Value(v) => dimension::Value::DimValue(*v),
            }),
            ..Default::default()
        })
        .collect();
    onnx::ValueInfoProto {
        name: Some(name.to_owned()),
        r#type: Some(onnx::TypeProto {
            value: Some(onnx::type_proto::Value::TensorType(
                onnx::type_proto::Tensor {
                    elem_type: Some(DataType::Float as i32),
                    shape: Some(onnx::TensorShapeProto { dim }),
                },
            )),
            ..Default::default()
        }),
        ..Default::default()
    }
}
