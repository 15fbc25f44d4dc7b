from setuptools import find_packages, setup

package_name = 'fleet_sim'

setup(
    name=package_name,
    version='0.1.0',
    packages=find_packages(exclude=['test']),
    package_data={package_name: ['py.typed']},
    data_files=[
        ('share/ament_index/resource_index/packages', ['resource/' + package_name]),
        ('share/' + package_name, ['package.xml']),
    ],
    install_requires=['setuptools'],
    zip_safe=True,
    maintainer='fleetlanes maintainers',
    maintainer_email='maintainers@fleetlanes.dev',
    description='Simulated fleet on the real agent intake, fault injection, node sets and the make demo scenario.',
    license='Apache-2.0',
    entry_points={
        'console_scripts': [
            'fleet_sim_host = fleet_sim.host:main',
            'fleet_sim_fault = fleet_sim.fault_cli:main',
            'fleet_diff_drive_sim = fleet_sim.diff_drive:main',
        ],
    },
)
