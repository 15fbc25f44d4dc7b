"""The Foxglove layout for a fleet: one tab per shard (ShardStatus, ack latency plot, an operator's e-stop button,
agent poses, trace log) and an overview (diagnostics, parameters, connection graph), built with the SDK's typed
layout model so the JSON matches what the Foxglove app imports.

`python -m fleet_observability.layout --config config/fleet.yaml -o config/foxglove/fleet_layout.json`
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

import foxglove.layouts as fl

from fleet_core import topics
from fleet_core.config import ConfigError, FleetConfig, ShardConfig, load_fleet_config


def shard_tab(shard: ShardConfig) -> fl.TabItem:
    site, sid = shard.site_id, shard.shard_id
    status = topics.shard_status(site, sid)
    odoms = [topics.agent_odom(site, agent) for agent in shard.agents]
    latency = fl.PlotPanel(
        title=f'{site}/{sid} ack latency (ms)',
        config=fl.PlotConfig(
            paths=[
                fl.PlotSeries(value=f'{status}.ack_latency_p50_ms', label='p50'),
                fl.PlotSeries(value=f'{status}.ack_latency_p99_ms', label='p99'),
                fl.PlotSeries(value=f'{status}.in_flight', label='in flight', use_right_y_axis=True),
            ],
            show_legend=True,
        ),
    )
    # Client publish of an EStop is an e-stop request the server hands to the shard leader (operators only).
    estop = fl.PublishPanel(
        title=f'{site}/{sid} e-stop (operators)',
        config=fl.PublishConfig(
            topic_name=topics.shard_estop(site, sid),
            datatype='fleet_interfaces/msg/EStop',
            button_text='E-STOP',
            button_color='#d32f2f',
            advanced_view=True,
            value=json.dumps({'engaged': True, 'reason': 'e-stop from Foxglove'}),
        ),
    )
    poses = fl.ThreeDeePanel(
        title=f'{site}/{sid} agent poses',
        config=fl.ThreeDeeConfig(
            topics={odom: fl.BaseRendererPoseTopicSettings(visible=True, type='arrow') for odom in odoms},
            layers={'grid': fl.BaseRendererGridLayerSettings()},
        ),
    )
    xy_map = fl.PlotPanel(
        title=f'{site}/{sid} agents (x, y)',
        config=fl.PlotConfig(
            x_axis_val='custom',
            paths=[
                fl.PlotSeries(
                    value=f'{odom}.pose.pose.position.y', x_value_path=f'{odom}.pose.pose.position.x', label=agent
                )
                for odom, agent in zip(odoms, shard.agents, strict=True)
            ],
            show_legend=False,
        ),
    )
    content = fl.SplitContainer(
        direction='row',
        items=[
            fl.SplitItem(
                proportion=1,
                content=fl.SplitContainer(
                    direction='column',
                    items=[
                        fl.SplitItem(
                            content=fl.RawMessagesPanel(
                                title='shard status', config=fl.RawMessagesConfig(topic_path=status)
                            )
                        ),
                        fl.SplitItem(content=latency),
                        fl.SplitItem(content=estop),
                    ],
                ),
            ),
            fl.SplitItem(
                proportion=1,
                content=fl.TabContainer(
                    tabs=[fl.TabItem(title='3D', content=poses), fl.TabItem(title='map', content=xy_map)]
                ),
            ),
            fl.SplitItem(
                proportion=1,
                content=fl.SplitContainer(
                    direction='column',
                    items=[
                        fl.SplitItem(
                            content=fl.TablePanel(
                                title='trace', config=fl.TableConfig(topic_path=topics.shard_trace(site, sid))
                            )
                        ),
                        fl.SplitItem(
                            content=fl.TablePanel(
                                title='outcomes',
                                config=fl.TableConfig(topic_path=f'{topics.shard_outcome(site, sid)}.outcomes'),
                            )
                        ),
                    ],
                ),
            ),
        ],
    )
    return fl.TabItem(title=f'{site}/{sid}', content=content)


def fleet_layout(fleet: FleetConfig) -> fl.Layout:
    overview = fl.SplitContainer(
        direction='row',
        items=[
            fl.SplitItem(
                content=fl.DiagnosticsSummaryPanel(config=fl.DiagnosticsSummaryConfig(topic_to_render='/diagnostics'))
            ),
            fl.SplitItem(content=fl.ParametersPanel()),
            fl.SplitItem(content=fl.TopicGraphPanel()),
        ],
    )
    tabs = [fl.TabItem(title='fleet', content=overview), *(shard_tab(s) for s in fleet.shards)]
    return fl.Layout(content=fl.TabContainer(tabs=tabs))


def layout_json(fleet: FleetConfig) -> str:
    """Indented JSON (stable, reviewable in git)."""
    return json.dumps(json.loads(fleet_layout(fleet).to_json()), indent=1) + '\n'


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog='fleet_foxglove_layout', description='Write the fleet Foxglove layout.')
    parser.add_argument('--config', default=None, help='fleet layout YAML (default $FLEETLANES_CONFIG)')
    parser.add_argument('-o', '--output', default='config/foxglove/fleet_layout.json')
    args = parser.parse_args(argv)
    try:
        fleet = load_fleet_config(args.config)
    except ConfigError as exc:
        print(f'fleet_foxglove_layout: error: {exc}', file=sys.stderr)
        return 2
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(layout_json(fleet))
    print(f'wrote {out} ({len(fleet.shards)} shard tabs)')
    return 0


if __name__ == '__main__':
    sys.exit(main())
