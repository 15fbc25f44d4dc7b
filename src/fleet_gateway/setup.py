from setuptools import find_packages, setup

package_name = 'fleet_gateway'

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
    description='rosbridge v2 WebSocket gateway with token auth, TLS, backpressure and admission control; site link.',
    license='Apache-2.0',
    entry_points={
        'console_scripts': [
            'fleet_gateway = fleet_gateway.main:main',
            'fleet_site_link = fleet_gateway.site_link:main',
        ],
    },
)
