"""TraceEvent conversion and the TraceEmitter live in fleet_ros.trace_msgs (agents emit hops too, without this
package); re-exported here for existing importers."""

from fleet_ros.trace_msgs import TraceEmitter, trace_from_msg, trace_to_msg

__all__ = ['TraceEmitter', 'trace_from_msg', 'trace_to_msg']
