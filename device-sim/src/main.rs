//! device-sim: a fleet of simulated iotbind devices (skeleton; the fleet arrives with its issue).

fn main() {
    println!("device-sim: not yet able to simulate devices");
}
