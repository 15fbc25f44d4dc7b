// roslibjs (npm "roslib") serving fleet_interfaces/RunMission on /js/served/mission through fleet_gateway
// (advertise_action); the pytest driver sends the goals with an rclpy ActionClient.
// Goals by workflow: "inspection" gets feedback every 50 ms until a "finish" goal arrives, which ends both as
// SUCCEEDED; "cancel-me" ends as CANCELED when ROS cancels it; "fail" ends with setFailed, then the action is
// unadvertised and the script exits 0. Usage: node action_server.mjs <ws-url-with-token>.
import { Action, Ros } from 'roslib';

const url = process.argv[2];
const step = (name) => console.log(`STEP ${name} ok`);
const fail = (why) => {
  console.log(`FAIL ${why}`);
  process.exit(1);
};
setTimeout(() => fail('timeout: the driver did not send every goal within 60 s'), 60000);

const ros = new Ros({});
ros.on('error', (err) => fail(`connection error: ${err?.message ?? err}`));
ros.on('connection', () => {
  const mission = new Action({ ros, name: '/js/served/mission', actionType: 'fleet_interfaces/action/RunMission' });
  let inspection = null;
  let ticker = null;
  mission.advertise(
    (goal, id) => {
      if (goal.workflow === 'inspection') {
        inspection = id;
        ticker = setInterval(() => mission.sendFeedback(id, { points_done: 1, points_total: goal.point_ids.length, state: 'RUNNING' }), 50);
      } else if (goal.workflow === 'finish') {
        if (inspection === null) fail('"finish" before "inspection"');
        clearInterval(ticker);
        mission.setSucceeded(inspection, { success: true, points_done: 2, points_total: 2, detail: 'done in js' });
        mission.setSucceeded(id, { success: true });
        step('succeeded');
      } else if (goal.workflow === 'fail') {
        mission.setFailed(id);
        step('failed');
        mission.unadvertise();
        setTimeout(() => { ros.close(); process.exit(0); }, 200);
      }
      // "cancel-me" waits for the cancel callback
    },
    (id) => {
      mission.setCanceled(id, { detail: 'cancelled in js' });
      step('canceled');
    },
  );
  step('advertise_action');
});
ros.connect(url).catch((err) => fail(err.message));
