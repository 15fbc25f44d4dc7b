// roslibjs (npm "roslib") against fleet_gateway: publish, subscribe, a service call, serving a service
// (advertise_service), action goals (result with feedback, cancel, rejection) and a reconnect.
// Usage: node gateway_compat.mjs <ws-url-with-token>. Prints one "STEP <name> ok" line per step; exits 0 when
// all passed, 1 on the first failure. The pytest driver runs it with a timeout and feeds the ROS side.
import { Action, Ros, Service, Topic } from 'roslib';

const url = process.argv[2];
const step = (name) => console.log(`STEP ${name} ok`);
const fail = (why) => {
  console.log(`FAIL ${why}`);
  process.exit(1);
};
const withTimeout = (promise, ms, what) =>
  Promise.race([promise, new Promise((_, reject) => setTimeout(() => reject(new Error(`timeout: ${what}`)), ms))]);

function connect() {
  return new Promise((resolve, reject) => {
    const ros = new Ros({});
    ros.on('connection', () => resolve(ros));
    ros.on('error', (err) => reject(new Error(`connection error: ${err?.message ?? err}`)));
    ros.connect(url).catch(reject);
  });
}

function firstMessage(ros, name, type) {
  return new Promise((resolve) => {
    const topic = new Topic({ ros, name, messageType: type });
    topic.subscribe((msg) => {
      topic.unsubscribe();
      resolve(msg);
    });
  });
}

async function main() {
  // 1. subscribe: the test's ROS node publishes std_msgs/String on /js/from_ros until we report it.
  let ros = await withTimeout(connect(), 5000, 'connect');
  step('connect');
  const fromRos = await withTimeout(firstMessage(ros, '/js/from_ros', 'std_msgs/msg/String'), 10000, 'subscribe');
  if (typeof fromRos.data !== 'string' || !fromRos.data.startsWith('ros says')) fail(`bad message ${JSON.stringify(fromRos)}`);
  step('subscribe');

  // 2. publish: the test's ROS subscriber waits for this.
  const out = new Topic({ ros, name: '/js/to_ros', messageType: 'std_msgs/String' });
  const ticker = setInterval(() => out.publish({ data: 'hello from roslibjs' }), 50);
  // the test answers on /js/ack once its subscriber saw our message
  await withTimeout(firstMessage(ros, '/js/ack', 'std_msgs/String'), 10000, 'publish acknowledged');
  clearInterval(ticker);
  step('publish');

  // 3. service call to a std_srvs/SetBool served by the test process (no type given: the gateway resolves it).
  const service = new Service({ ros, name: '/js/set_flag', serviceType: 'std_srvs/srv/SetBool' });
  const response = await withTimeout(
    new Promise((resolve, reject) => service.callService({ data: true }, resolve, (e) => reject(new Error(e)))),
    10000,
    'service call',
  );
  if (response.success !== true || response.message !== 'flag=True') fail(`bad response ${JSON.stringify(response)}`);
  step('service');

  // 4. a bad request gets a status error carrying our id
  const status = new Promise((resolve) => {
    ros.on('status:bad-1', resolve);
    ros.on('status', (msg) => msg.id === 'bad-1' && resolve(msg));
  });
  ros.callOnConnection({ op: 'subscribe', id: 'bad-1', topic: '/js/x', type: 'no_such_pkg/Nope' });
  const err = await withTimeout(status, 5000, 'status error');
  if (err.level !== 'error' || !String(err.msg).includes('no_such_pkg')) fail(`bad status ${JSON.stringify(err)}`);
  step('status');

  // 5. advertise_service: the test's rclpy client calls /js/served/echo (std_srvs/SetBool) once it appears
  const served = new Service({ ros, name: '/js/served/echo', serviceType: 'std_srvs/srv/SetBool' });
  const called = new Promise((resolve) => {
    served.advertise((request, response) => {
      response.success = !request.data;
      response.message = `roslibjs got ${request.data}`;
      resolve();
      return true;
    });
  });
  await withTimeout(called, 20000, 'a ROS call to the advertised service');
  await new Promise((resolve) => setTimeout(resolve, 300)); // let the service_response go out first
  await served.unadvertise();
  step('advertise_service');

  // 6. actions: a stand-in fleet_interfaces/RunMission server (another process) serves /js/act/mission.
  const mission = new Action({ ros, name: '/js/act/mission', actionType: 'fleet_interfaces/action/RunMission' });
  const runGoal = (workflow, points, cancelOnFirstFeedback = false) =>
    new Promise((resolve) => {
      const feedback = [];
      const goal = { mission_id: `js-${workflow}`, workflow, point_ids: Array.from({ length: points }, (_, i) => `p${i}`) };
      const id = mission.sendGoal(
        goal,
        (result) => resolve({ result, feedback }),
        (values) => {
          feedback.push(values);
          if (cancelOnFirstFeedback && feedback.length === 1) mission.cancelGoal(id);
        },
        (error) => resolve({ error, feedback }),
      );
    });
  const done = await withTimeout(runGoal('quick', 5), 30000, 'action result');
  if (!done.result || done.result.success !== true || done.result.points_done !== 5) fail(`bad action result ${JSON.stringify(done)}`);
  if (done.feedback.length === 0 || done.feedback.at(-1).points_total !== 5) fail(`bad feedback ${JSON.stringify(done.feedback)}`);
  step('action');
  // roslibjs reports a goal that ended other than SUCCEEDED through the failed callback, with the status named
  const cancelled = await withTimeout(runGoal('slow', 20, true), 30000, 'cancelled action result');
  if (!String(cancelled.error).includes('Action was canceled') || !String(cancelled.error).includes('cancelled by the client')) {
    fail(`bad cancel outcome ${JSON.stringify(cancelled)}`);
  }
  step('action_cancel');
  const rejected = await withTimeout(runGoal('reject', 1), 30000, 'rejected action result');
  if (!String(rejected.error).includes('rejected')) fail(`bad rejection ${JSON.stringify(rejected)}`);
  step('action_rejected');

  // 7. reconnect: drop the connection, connect again and resubscribe
  await withTimeout(new Promise((resolve) => { ros.on('close', resolve); ros.close(); }), 5000, 'close');
  ros = await withTimeout(connect(), 5000, 'reconnect');
  const again = await withTimeout(firstMessage(ros, '/js/from_ros', 'std_msgs/String'), 10000, 'resubscribe');
  if (!again.data.startsWith('ros says')) fail('bad message after reconnect');
  step('reconnect');
  ros.close();
  process.exit(0);
}

main().catch((err) => fail(err.message));
