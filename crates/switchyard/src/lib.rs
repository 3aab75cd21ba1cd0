pub fn _x(){}
pub mod routing;
